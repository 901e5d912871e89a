package client_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/arqonbus/arqonbus/client"
)

// A server may route messages to a subscription before it acknowledges it
// (the gateway inserts the route, then waits for the other nodes). More of
// them than the subscription's channel holds must not stop the client's
// reader, or it never reads the ACK that Subscribe waits for. Here a peer
// speaking the protocol sends three times Buffer messages before the ACK.
func TestMessagesBeforeAckDoNotStallTheReader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const buffer = 16
	served := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		if _, err := ws.Upgrade(conn); err != nil {
			served <- err
			return
		}
		send := func(s string) error { return wsutil.WriteServerMessage(conn, ws.OpText, []byte(s)) }
		if err := send(`{"op":"welcome","session_id":"s1","node_id":"n1","tenant":"t","user":"u","heartbeat_interval_ms":25000,"protocol_version":1}`); err != nil {
			served <- err
			return
		}
		msg, _, err := wsutil.ReadClientData(conn)
		if err != nil {
			served <- err
			return
		}
		if !strings.Contains(string(msg), `"op":"sub"`) {
			served <- fmt.Errorf("expected a sub, got %s", msg)
			return
		}
		for i := range 3 * buffer {
			if err := send(fmt.Sprintf(`{"op":"msg","subject":"room.1","data":"m%d"}`, i)); err != nil {
				served <- err
				return
			}
		}
		if err := send(`{"op":"ack","id":1}`); err != nil {
			served <- err
			return
		}
		if err := send(`{"op":"msg","subject":"room.1","data":"after"}`); err != nil {
			served <- err
			return
		}
		served <- nil
		<-done // keep the connection until the client read it all
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + ln.Addr().String() + "/v1/socket", Token: "x", Codec: client.JSON, Buffer: buffer})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, "room.1")
	if err != nil {
		t.Fatalf("subscribe behind %d early messages: %v", 3*buffer, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	// What arrived before the ACK filled the channel (the rest was
	// dropped); the message after the ACK arrives, in order, last.
	var got []string
	for len(got) == 0 || got[len(got)-1] != "after" {
		select {
		case m := <-sub.C:
			got = append(got, string(m.Data))
		case <-ctx.Done():
			t.Fatalf("the message after the ACK never came (got %v)", got)
		}
	}
	if len(got) != buffer+1 {
		t.Fatalf("got %d messages, want the %d that fit before the ACK and the one after", len(got), buffer)
	}
}
