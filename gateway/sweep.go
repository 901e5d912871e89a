package gateway

import (
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/gobwas/ws"
)

// sweep keeps the coarse clock and enforces deadlines with one periodic
// pass over the connections instead of a timer per connection:
//
//   - an upgrade request not complete within HandshakeTimeout: closed;
//   - a frame started but not complete within FrameTimeout: closed (1008);
//   - silent for HeartbeatInterval: a WebSocket ping is sent;
//   - silent for IdleTimeout: closed (1001);
//   - its token expired (exp + auth.Leeway passed): ERROR
//     AUTHENTICATION_FAILED and closed (1008), unless KeepExpiredSessions;
//   - an empty outbound queue gives back an array grown by a burst.
func (g *Gateway) sweep() {
	tick := time.NewTicker(g.cfg.SweepInterval / 10)
	defer tick.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-g.stop:
			return
		case now := <-tick.C:
			g.clock.Store(now.UnixNano())
			if now.Sub(lastSweep) < g.cfg.SweepInterval {
				continue
			}
			lastSweep = now
			g.sweepOnce(now.UnixNano())
		}
	}
}

func (g *Gateway) sweepOnce(now int64) {
	hs := int64(g.cfg.HandshakeTimeout)
	ft := int64(g.cfg.FrameTimeout)
	hb := int64(g.cfg.HeartbeatInterval)
	idle := int64(g.cfg.IdleTimeout)
	expireBefore := now - int64(auth.Leeway) // tokens whose exp is earlier have expired
	g.reg.each(func(c *conn) {
		switch c.state.Load() {
		case stateHandshake:
			if now-c.created > hs {
				c.refuse("timeout")
				g.metrics.timeouts.WithLabelValues("handshake").Inc()
				c.closeNow()
			}
			return
		case stateOpen:
		default:
			return
		}
		c.trimQueue()
		if exp := c.ident.ExpiresAt; !g.cfg.KeepExpiredSessions && !exp.IsZero() && exp.UnixNano() < expireBefore {
			g.metrics.timeouts.WithLabelValues("token").Inc()
			c.tokenExpired()
			return
		}
		if ps := c.partialSince.Load(); ps != 0 && now-ps > ft {
			g.metrics.timeouts.WithLabelValues("frame").Inc()
			c.goAway(closePolicyViolated, "frame read timeout")
			return
		}
		last := c.lastRead.Load()
		if now-last > idle {
			g.metrics.timeouts.WithLabelValues("idle").Inc()
			c.closeReason(reasonPingTimeout)
			c.goAway(closeGoingAway, "idle timeout")
			return
		}
		if now-last > hb && now-c.lastPing.Load() > hb {
			c.lastPing.Store(now)
			c.enqueueControl(ws.OpPing, nil)
		}
	})
}

// tokenExpired tells the client its token expired (ERROR
// AUTHENTICATION_FAILED) and closes the connection (1008).
func (c *conn) tokenExpired() {
	c.closeReason(reasonTokenExpired)
	c.g.metrics.frameError(pb.ErrorCode_ERROR_CODE_AUTHENTICATION_FAILED)
	c.enqueueForce(encodeServerFrame(c.codec == codecJSON, &pb.ServerFrame{
		Op:    pb.Op_OP_ERROR,
		Error: &pb.Error{Code: pb.ErrorCode_ERROR_CODE_AUTHENTICATION_FAILED, Message: "token expired"},
	}))
	c.goAway(closePolicyViolated, "token expired")
}
