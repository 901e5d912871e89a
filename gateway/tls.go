package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// wss://: the TLS path beside netpoll. netpoll serves plain TCP, so a TLS
// connection is terminated here by crypto/tls on a goroutine pair of its
// own and its bytes relayed to the netpoll listener over loopback, where
// it is an ordinary connection. It costs two goroutines (about 16 KiB of
// stack), crypto/tls's buffers and three file descriptors per client
// instead of one: right for a node of moderate size that must speak TLS
// itself; for the 100k-connection case terminate TLS in front (a load
// balancer or proxy) and use tls_terminated_upstream (docs/OPERATIONS.md,
// perf-reports/tls.md).

// ServeTLS serves wss:// on ln with cfg: it starts the gateway on an
// internal loopback listener (Serve) and relays every TLS connection
// accepted on ln to it. Shutdown closes ln too.
func (g *Gateway) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil) {
		return errors.New("gateway: ServeTLS needs a certificate")
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := g.Serve(inner); err != nil {
		inner.Close()
		return err
	}
	g.mu.Lock()
	g.tlsLn = ln
	g.mu.Unlock()
	g.done.Add(1)
	go g.acceptTLS(ln, cfg, inner.Addr().String())
	return nil
}

// TLSAddr is the address ServeTLS serves wss:// on, or nil.
func (g *Gateway) TLSAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tlsLn == nil {
		return nil
	}
	return g.tlsLn.Addr()
}

func (g *Gateway) acceptTLS(ln net.Listener, cfg *tls.Config, inner string) {
	defer g.done.Done()
	var relays sync.WaitGroup
	defer relays.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if g.draining.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			g.metrics.limit("tls_accept")
			time.Sleep(50 * time.Millisecond) // e.g. EMFILE: let descriptors free up
			continue
		}
		if g.draining.Load() {
			c.Close()
			continue
		}
		relays.Add(1)
		go func() {
			defer relays.Done()
			g.relayTLS(c, cfg, inner)
		}()
	}
}

// relayTLS terminates one TLS connection and relays it to the netpoll
// listener until either side closes.
func (g *Gateway) relayTLS(raw net.Conn, cfg *tls.Config, inner string) {
	tc := tls.Server(raw, cfg)
	_ = raw.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		g.metrics.handshakeFail("tls")
		g.events.emit(slog.LevelInfo, "upgrade refused", "tls", "remote", raw.RemoteAddr().String(), "err", err.Error())
		raw.Close()
		return
	}
	_ = raw.SetDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", inner, 5*time.Second)
	if err != nil {
		g.metrics.handshakeFail("tls_relay")
		tc.Close()
		return
	}
	// Small relay buffers: io.Copy's default 32 KiB each way would be
	// most of an idle TLS connection's memory.
	done := make(chan struct{})
	go func() {
		_, _ = io.CopyBuffer(onlyWriter{up}, onlyReader{tc}, make([]byte, relayBuffer)) // client -> gateway
		if t, ok := up.(*net.TCPConn); ok {
			_ = t.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.CopyBuffer(onlyWriter{tc}, onlyReader{up}, make([]byte, relayBuffer)) // gateway -> client
	tc.Close()
	up.Close()
	<-done
}

// relayBuffer is each direction's copy buffer of a TLS relay.
const relayBuffer = 4 << 10

// onlyReader and onlyWriter hide ReadFrom/WriteTo, so that io.CopyBuffer
// uses the given buffer (net.TCPConn's ReaderFrom would allocate its own).
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }
