package policy

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// moduleKey is the context key under which the guest's *module travels to
// host functions.
type moduleKey struct{}

// callCtx is the context.Context an instance hands wazero for each call. It
// carries the time budget without allocating: a timer made once per instance
// is Reset before a call and Stopped after it; when it fires it closes done,
// and wazero (WithCloseOnContextDone) stops the guest and closes the module.
// A callCtx whose timer has fired is spent, and so is its instance.
type callCtx struct {
	mod     *module
	done    chan struct{}
	expired atomic.Bool
	timer   *time.Timer
}

// newCallCtx returns a callCtx whose timer is stopped.
func newCallCtx(m *module) *callCtx {
	c := &callCtx{mod: m, done: make(chan struct{})}
	c.timer = time.AfterFunc(time.Hour, func() {
		c.expired.Store(true)
		close(c.done)
	})
	c.timer.Stop()
	return c
}

// Deadline implements context.Context; the budget is enforced through Done.
func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context.
func (c *callCtx) Done() <-chan struct{} { return c.done }

// Err implements context.Context.
func (c *callCtx) Err() error {
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// Value implements context.Context; it knows only moduleKey.
func (c *callCtx) Value(key any) any {
	if _, ok := key.(moduleKey); ok {
		return c.mod
	}
	return nil
}

// instance is one instantiated policy module. It is owned by one goroutine at
// a time: whoever took it from the module's pool.
type instance struct {
	m        *module
	mod      api.Module
	mem      api.Memory
	lm       *limitedMemory
	decideFn api.Function
	allocFn  api.Function
	ctx      *callCtx
	stack    []uint64

	bufPtr, bufCap uint32 // the request buffer from arqon_alloc

	// scratch is a shallow copy of the request without its payload (or with
	// payload_size filled in); it refers to the caller's data only while
	// marshaling.
	scratch pb.PolicyRequest
	// lastMsg is the last deny message, reused while the guest returns the
	// same bytes so that a repeated deny does not allocate.
	lastMsg string
}

// call runs fn with the instance's stack under the time budget d. It
// reports reasonNone, or why the call failed; after a failure the instance
// must be discarded.
func (in *instance) call(fn api.Function, d time.Duration) failReason {
	c := in.ctx
	c.timer.Reset(d)
	err := fn.CallWithStack(c, in.stack)
	if !c.timer.Stop() {
		// The budget ran out while the call ran or just as it returned:
		// the module may be closed under us, so the call counts as timed out.
		if in.lm.breached {
			return reasonMemoryLimit
		}
		return reasonTimeout
	}
	if in.lm.breached {
		return reasonMemoryLimit
	}
	if err != nil {
		return classify(err)
	}
	return reasonNone
}

// classify maps an error from a guest call to a fail-closed reason.
func classify(err error) failReason {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return reasonTimeout
		case sys.ExitCodeContextCanceled:
			return reasonCanceled
		}
	}
	return reasonTrap
}

// ensureBuf makes the request buffer hold at least size bytes.
func (in *instance) ensureBuf(size int, d time.Duration) failReason {
	if in.bufPtr != 0 && uint64(size) <= uint64(in.bufCap) {
		return reasonNone
	}
	n := uint64(minRequestBuf)
	for n < uint64(size) {
		n <<= 1
	}
	if n > in.lm.limit {
		return reasonMemoryLimit
	}
	in.stack[0] = n
	if r := in.call(in.allocFn, d); r != reasonNone {
		return r
	}
	ptr := uint32(in.stack[0])
	if ptr == 0 {
		return reasonAlloc
	}
	if _, ok := in.mem.Read(ptr, uint32(n)); !ok {
		return reasonAlloc
	}
	in.bufPtr, in.bufCap = ptr, uint32(n)
	return reasonNone
}

// decide writes req into guest memory and runs arqon_decide. It returns the
// guest's result, or why the call failed.
func (in *instance) decide(req *pb.PolicyRequest, d time.Duration) (uint64, failReason) {
	r := req
	size := uint32(len(req.Payload))
	if (!in.m.needsPayload && size > 0) || (req.PayloadSize < size) {
		s := &in.scratch
		s.Action, s.Tenant, s.User, s.Role = req.Action, req.Tenant, req.User, req.Role
		s.Capabilities, s.Subject, s.Headers = req.Capabilities, req.Subject, req.Headers
		if in.m.needsPayload {
			s.Payload = req.Payload
		}
		s.PayloadSize = max(req.PayloadSize, size)
		r = s
	}
	n := r.SizeVT()
	if fr := in.ensureBuf(n, d); fr != reasonNone {
		in.clearScratch()
		return 0, fr
	}
	view, _ := in.mem.Read(in.bufPtr, uint32(n))
	_, err := r.MarshalToSizedBufferVT(view)
	in.clearScratch()
	if err != nil {
		return 0, reasonBadRequest
	}
	in.stack[0], in.stack[1] = uint64(in.bufPtr), uint64(n)
	if fr := in.call(in.decideFn, d); fr != reasonNone {
		return 0, fr
	}
	return in.stack[0], reasonNone
}

// clearScratch drops the scratch request's references to caller data.
func (in *instance) clearScratch() {
	s := &in.scratch
	s.Tenant, s.User, s.Role, s.Subject = "", "", "", ""
	s.Capabilities, s.Headers, s.Payload = nil, nil, nil
}

// denial decodes a non-zero arqon_decide result into a deny Decision; ok is
// false if the result breaks the ABI.
func (in *instance) denial(r uint64) (d Decision, ok bool) {
	mem, _ := in.mem.Read(0, in.mem.Size())
	code, msg, ok := decodeResult(r, mem)
	if !ok {
		return Decision{}, false
	}
	return Decision{Code: code, Message: in.message(msg), Policy: in.m.name}, true
}

// message turns the guest's message bytes into a string, reusing the last one
// when the bytes repeat.
func (in *instance) message(b []byte) string {
	if len(b) == 0 {
		return defaultDenyMessage
	}
	if string(b) == in.lastMsg {
		return in.lastMsg
	}
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	in.lastMsg = s
	return s
}

// close releases the instance.
func (in *instance) close() {
	in.ctx.timer.Stop()
	if in.mod != nil {
		_ = in.mod.Close(context.Background())
	}
}
