// Copyright 2022 CloudWeGo Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//    http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//go:build !windows
// +build !windows

package netpoll

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// newServer wrap listener into server, quit will be invoked when server exit.
func newServer(ln Listener, opts *options, onQuit func(err error)) *server {
	return &server{
		ln:     ln,
		opts:   opts,
		onQuit: onQuit,
		conns:  make(map[int]*connection),
	}
}

type server struct {
	operator FDOperator
	ln       Listener
	opts     *options
	onQuit   func(err error)
	// arqonbus patch 3: a plain map under a mutex (was a sync.Map, about
	// 105 bytes per connection against about 40).
	connsMu sync.Mutex
	conns   map[int]*connection // key=fd
	// arqonbus patch 5: a goroutine retries accepts (out of descriptors).
	retrying atomic.Bool
}

// Run this server.
func (s *server) Run() (err error) {
	s.operator = FDOperator{
		FD:     s.ln.Fd(),
		OnRead: s.OnRead,
		OnHup:  s.OnHup,
	}
	s.operator.poll = pollmanager.Pick()
	err = s.operator.Control(PollReadable)
	if err != nil {
		s.onQuit(err)
	}
	return err
}

// Close this server with deadline.
func (s *server) Close(ctx context.Context) error {
	s.operator.Control(PollDetach)
	s.ln.Close()

	for {
		activeConn := 0
		// Close outside the lock: a close callback takes it.
		s.connsMu.Lock()
		conns := make([]*connection, 0, len(s.conns))
		for _, c := range s.conns {
			conns = append(conns, c)
		}
		s.connsMu.Unlock()
		for _, c := range conns {
			if c.isIdle() {
				c.Close()
			} else {
				activeConn++
			}
		}
		if activeConn == 0 { // all connections have been closed
			return nil
		}

		// smart control graceful shutdown check internal
		// we should wait for more time if there are more active connections
		waitTime := time.Millisecond * time.Duration(activeConn)
		if waitTime > time.Second { // max wait time is 1000 ms
			waitTime = time.Millisecond * 1000
		} else if waitTime < time.Millisecond*50 { // min wait time is 50 ms
			waitTime = time.Millisecond * 50
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(waitTime):
			continue
		}
	}
}

// OnRead implements FDOperator.
func (s *server) OnRead(p Poll) error {
	// accept socket
	conn, err := s.ln.Accept()
	if err == nil {
		if conn != nil {
			s.onAccept(conn.(Conn))
		}
		// EAGAIN | EWOULDBLOCK if conn and err both nil
		return nil
	}
	// arqonbus patch 5: out of file descriptors, one retry goroutine at a
	// time (v0.7.2 could pile up thousands), each failure counted
	// (OutOfFDAccepts) and logged at most every 10 s instead of every time.
	if isOutOfFdErr(err) {
		outOfFDAccepts.Add(1)
		if !s.retrying.CompareAndSwap(false, true) {
			return nil
		}
		logOutOfFD(err)
		// since we use Epoll LT, we have to detach listener fd from epoll first
		// and re-register it when accept successfully or there is no available connection
		cerr := s.operator.Control(PollDetach)
		if cerr != nil {
			s.retrying.Store(false)
			logger.Printf("NETPOLL: detach listener fd failed: %v", cerr)
			return err
		}
		go s.retryAccept()
		return err
	}
	logger.Printf("NETPOLL: accept conn failed: %v", err)

	// shut down
	if strings.Contains(err.Error(), "closed") {
		s.operator.Control(PollDetach)
		s.onQuit(err)
		return err
	}

	return err
}

// OnHup implements FDOperator.
func (s *server) OnHup(p Poll) error {
	s.onQuit(errors.New("listener close"))
	return nil
}

func (s *server) onAccept(conn Conn) {
	// store & register connection
	nconn := new(connection)
	nconn.init(conn, s.opts)
	if !nconn.IsActive() {
		return
	}
	fd := conn.Fd()
	nconn.AddCloseCallback(func(connection Connection) error {
		s.connsMu.Lock()
		if s.conns[fd] == nconn { // not a newer connection that reused the fd
			delete(s.conns, fd)
		}
		s.connsMu.Unlock()
		return nil
	})
	s.connsMu.Lock()
	s.conns[fd] = nconn
	s.connsMu.Unlock()

	// trigger onConnect asynchronously
	nconn.onConnect()
}

// retryAccept accepts with back-off while descriptors are short, and
// hands the listener back to the poller once its queue is empty.
func (s *server) retryAccept() {
	retryTimes := []time.Duration{0, 10, 50, 100, 200, 500, 1000} // ms
	i := 1                                                        // the failure that started it
	for {
		if i > 0 {
			time.Sleep(retryTimes[i] * time.Millisecond)
		}
		conn, err := s.ln.Accept()
		switch {
		case err == nil && conn == nil: // EAGAIN: queue empty
			s.retrying.Store(false)
			s.operator.Control(PollReadable)
			return
		case err == nil:
			s.onAccept(conn.(Conn))
			i = 0
		case isOutOfFdErr(err):
			outOfFDAccepts.Add(1)
			logOutOfFD(err)
			if i+1 < len(retryTimes) {
				i++
			}
		default: // the listener closed
			s.retrying.Store(false)
			return
		}
	}
}

// outOfFDAccepts counts accepts that failed for want of a descriptor.
var (
	outOfFDAccepts atomic.Uint64
	outOfFDLogged  atomic.Int64 // Unix nanoseconds of the last log line
)

// OutOfFDAccepts reports how many accepts failed with EMFILE or ENFILE
// (arqonbus patch 5): the process or the system is out of descriptors.
func OutOfFDAccepts() uint64 { return outOfFDAccepts.Load() }

func logOutOfFD(err error) {
	now := time.Now().UnixNano()
	last := outOfFDLogged.Load()
	if now-last < int64(10*time.Second) || !outOfFDLogged.CompareAndSwap(last, now) {
		return
	}
	logger.Printf("NETPOLL: accept conn failed: %v (%d times so far; retrying with back-off, logged at most every 10s)", err, outOfFDAccepts.Load())
}

func isOutOfFdErr(err error) bool {
	se, ok := err.(syscall.Errno)
	return ok && (se == syscall.EMFILE || se == syscall.ENFILE)
}
