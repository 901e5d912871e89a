package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client/api"
)

// runAPI is "arq api COMMAND": the server API from the command line.
func runAPI(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: arq api publish|broadcast|presence|disconnect|info [flags] (arq api COMMAND --help)")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("api "+cmd, flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:9090", "the node's API address (the admin listener, or [api] listen)")
	key := fs.String("key", "", "API key (default $ARQ_API_KEY, else the dev admin key derived from .arqon/dev-secret)")
	tenant := fs.String("tenant", "dev", "tenant")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	var (
		headers    = map[string]string{}
		b64        *bool
		countOnly  *bool
		limit      *int
		cursor     *string
		user, sess *string
		code       *uint
		reason     *string
	)
	switch cmd {
	case "publish", "broadcast":
		fs.Func("header", "a header key=value (repeatable)", func(v string) error {
			k, val, ok := cut(v)
			if !ok {
				return errors.New("header must be key=value")
			}
			headers[k] = val
			return nil
		})
		b64 = fs.Bool("base64", false, "DATA is base64 of a binary payload")
	case "presence":
		countOnly = fs.Bool("count", false, "only the counts")
		limit = fs.Int("limit", 0, "members per page (1-1000; default all pages)")
		cursor = fs.String("cursor", "", "continue a paged listing")
	case "disconnect":
		user = fs.String("user", "", "close every session of this user")
		sess = fs.String("session", "", "close only this session")
		code = fs.Uint("code", 1000, "WebSocket close code (1000 or 3000-4999)")
		reason = fs.String("reason", "", "close reason")
	case "info":
	default:
		return fmt.Errorf("arq api: unknown command %q (publish, broadcast, presence, disconnect, info)", cmd)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	k := *key
	if k == "" {
		k = os.Getenv("ARQ_API_KEY")
	}
	if k == "" {
		secret, err := auth.ReadSecret(auth.DevSecretPath)
		if err != nil {
			return errors.New("arq api: no --key, no $ARQ_API_KEY and no dev secret here")
		}
		k = devAPIKey(secret)
	}
	c := api.New(*url, k)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rest := fs.Args()
	switch cmd {
	case "publish", "broadcast":
		if len(rest) < 2 {
			return fmt.Errorf("usage: arq api %s [flags] SUBJECT%s DATA", cmd, map[bool]string{true: "[,SUBJECT...]", false: ""}[cmd == "broadcast"])
		}
		p := api.Publication{Tenant: *tenant, Headers: headers}
		data := rest[len(rest)-1]
		if *b64 {
			var err error
			if p.Binary, err = decodeB64(data); err != nil {
				return err
			}
		} else {
			p.Data = data
		}
		if cmd == "publish" {
			if len(rest) != 2 {
				return errors.New("usage: arq api publish [flags] SUBJECT DATA")
			}
			p.Subject = rest[0]
			return c.Publish(ctx, p)
		}
		p.Subjects = rest[:len(rest)-1]
		results, err := c.Broadcast(ctx, p)
		if err != nil {
			return err
		}
		failed := 0
		for i, r := range results {
			if r.Error != nil {
				failed++
				fmt.Printf("%s\t%s: %s\n", p.Subjects[i], r.Error.Code, r.Error.Message)
			}
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d subjects failed", failed, len(results))
		}
		return nil
	case "presence":
		if len(rest) != 1 {
			return errors.New("usage: arq api presence [--count] [--limit N] [--cursor C] SUBJECT")
		}
		for cur := *cursor; ; {
			a, err := c.Presence(ctx, *tenant, rest[0], *countOnly, *limit, cur)
			if err != nil {
				return err
			}
			if *countOnly {
				fmt.Printf("members %d\nusers %d\n", a.Count, a.Users)
				return nil
			}
			for _, m := range a.Members {
				fmt.Printf("%s\t%s\t%s\t%s\t%s\n", m.User, m.Session, m.Node,
					time.UnixMilli(m.JoinedAt).UTC().Format(time.RFC3339Nano), m.Info)
			}
			if a.Cursor == "" || *limit > 0 {
				if a.Cursor != "" {
					fmt.Printf("next cursor: %s\n", a.Cursor)
				}
				return nil
			}
			cur = a.Cursor
		}
	case "disconnect":
		if *code > 4999 {
			return errors.New("--code must be 1000 or 3000-4999")
		}
		n, err := c.Disconnect(ctx, api.Disconnection{Tenant: *tenant, User: *user, Session: *sess, Code: uint16(*code), Reason: *reason})
		if err != nil {
			return err
		}
		fmt.Printf("disconnected on this node: %d (other nodes close theirs)\n", n)
		return nil
	default: // info
		ni, err := c.Info(ctx)
		if err != nil {
			return err
		}
		out, _ := json.MarshalIndent(ni, "", "  ")
		fmt.Println(string(out))
		return nil
	}
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], i > 0
		}
	}
	return "", "", false
}

func decodeB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("DATA is not valid base64")
	}
	return b, nil
}
