package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Event logging: what an operator needs to see in the log (refused
// upgrades, protocol-error closes, slow consumers, limit hits), with the
// session, tenant and remote address, rate-limited per kind and reason so
// a flood (a reconnect storm of bad tokens, an abusive client) cannot fill
// a disk: each kind/reason pair may log logBurst lines at once and
// logRate a second after that; what is held back is counted and said
// with the next line that passes. Nothing is logged per message.

const (
	logRate  = 5.0 // lines per second per kind and reason
	logBurst = 20
)

type eventLog struct {
	log *slog.Logger
	mu  sync.Mutex
	per map[string]*eventBucket
}

type eventBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// emit logs msg at level unless kind/reason is over its rate.
func (e *eventLog) emit(level slog.Level, msg, reason string, attrs ...any) {
	if !e.log.Enabled(context.Background(), level) {
		return
	}
	key := msg + "\x00" + reason
	now := time.Now()
	e.mu.Lock()
	if e.per == nil {
		e.per = make(map[string]*eventBucket)
	}
	b := e.per[key]
	if b == nil {
		if len(e.per) > 4096 { // bounded: forget the old buckets
			clear(e.per)
		}
		b = &eventBucket{tokens: logBurst, last: now}
		e.per[key] = b
	}
	b.tokens = min(logBurst, b.tokens+now.Sub(b.last).Seconds()*logRate)
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		e.mu.Unlock()
		return
	}
	b.tokens--
	held := b.suppressed
	b.suppressed = 0
	e.mu.Unlock()
	if reason != "" {
		attrs = append(attrs, "reason", reason)
	}
	if held > 0 {
		attrs = append(attrs, "suppressed", held)
	}
	e.log.Log(context.Background(), level, msg, attrs...)
}

// note logs an event of c with its session, tenant and remote address.
func (c *conn) note(level slog.Level, msg, reason string) {
	g := c.g
	if !g.log.Enabled(context.Background(), level) {
		return
	}
	remote := ""
	if a := c.nc.RemoteAddr(); a != nil {
		remote = a.String()
	}
	g.events.emit(level, msg, reason, "session", c.id, "tenant", c.ident.Tenant, "remote", remote)
}

// refuse counts and logs a refused upgrade.
func (c *conn) refuse(reason string) {
	c.g.metrics.handshakeFail(reason)
	c.note(slog.LevelInfo, "upgrade refused", reason)
}

// limitHit counts and logs a limit hit.
func (c *conn) limitHit(name string) {
	c.g.metrics.limit(name)
	c.note(slog.LevelInfo, "limit hit", name)
}

// protocolErr counts and logs a protocol violation (the connection is
// being closed).
func (c *conn) protocolErr(what string) {
	c.g.metrics.protocolError.Inc()
	c.note(slog.LevelWarn, "protocol error: closing", what)
}
