package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
)

type connFlags struct {
	urls   *urlFlag
	token  *string
	tenant *string
	user   *string
	caps   *capFlag
	json   *bool
	secret *string
}

func addConnFlags(fs *flag.FlagSet) connFlags {
	f := connFlags{
		urls:   &urlFlag{},
		token:  fs.String("token", os.Getenv("ARQ_TOKEN"), "JWT (default $ARQ_TOKEN, else one minted from the dev secret)"),
		tenant: fs.String("tenant", "dev", "tenant for a minted token"),
		user:   fs.String("user", "cli", "user for a minted token (its sub claim)"),
		caps:   new(capFlag),
		json:   fs.Bool("json", false, "use the JSON codec instead of Protobuf"),
		secret: fs.String("secret-file", "", "secret to mint with (default "+auth.DevSecretPath+")"),
	}
	fs.StringVar(f.user, "sub", "cli", "alias of --user")
	fs.Var(f.urls, "url", "socket URL (default ws://127.0.0.1:8080/v1/socket); repeat it for several nodes of one bus: the first that answers is used")
	fs.Var(f.caps, "cap", "a capability of a minted token, repeatable (as arq token --cap)")
	return f
}

// urlFlag collects repeated --url values.
type urlFlag []string

func (u *urlFlag) String() string { return strings.Join(*u, " ") }
func (u *urlFlag) Set(v string) error {
	if v == "" {
		return errors.New("empty URL")
	}
	*u = append(*u, v)
	return nil
}

func (f connFlags) dial(ctx context.Context) (*client.Client, error) {
	return f.dialWith(ctx, client.Options{})
}

// dialWith dials with o plus the flags' addresses, codec and token (a
// minted one is minted again for every connection).
func (f connFlags) dialWith(ctx context.Context, o client.Options) (*client.Client, error) {
	o.URLs = *f.urls
	if len(o.URLs) == 0 {
		o.URLs = []string{"ws://127.0.0.1:8080/v1/socket"}
	}
	o.NoRandomize = true
	o.Token = *f.token
	if o.Token == "" {
		secret, err := loadSecret(*f.secret)
		if err != nil {
			return nil, fmt.Errorf("no --token and no dev secret: %w", err)
		}
		mint := func(context.Context) (string, error) {
			return auth.Mint(secret, auth.MintOptions{Tenant: *f.tenant, User: *f.user, Capabilities: *f.caps, TTL: time.Hour})
		}
		if _, err := mint(ctx); err != nil {
			return nil, err
		}
		o.TokenFunc = mint
	}
	if *f.json {
		o.Codec = client.JSON
	}
	return client.Dial(ctx, o)
}

// parseInterleaved parses flags that may come before or after positional
// arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runSub(args []string) error {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	cf := addConnFlags(fs)
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	presence := fs.Bool("presence", false, "join the room SUBJECT (a literal subject) as a presence member and print its joins and leaves")
	info := fs.String("info", "", "with --presence: client info, a JSON object of at most 256 bytes")
	reconnect := fs.Bool("reconnect", false, "when the connection ends, reconnect (through the --url list) and subscribe again, until interrupted")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: arq sub [--presence [--info JSON]] SUBJECT")
	}
	if *info != "" && !*presence {
		return errors.New("--info needs --presence")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := client.Options{}
	if *reconnect {
		o.Reconnect, o.MaxReconnects = true, -1
		o.OnDisconnect = func(err error) { fmt.Fprintf(os.Stderr, "disconnected: %v; reconnecting\n", err) }
		o.OnReconnect = func(url string) { fmt.Fprintf(os.Stderr, "reconnected to %s\n", url) }
	}
	c, err := cf.dialWith(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	var sub *client.Subscription
	if *presence {
		sub, err = c.SubscribePresence(ctx, pos[0], []byte(*info))
	} else {
		sub, err = c.Subscribe(ctx, pos[0])
	}
	if err != nil {
		return err
	}
	what := "subscribed to"
	if *presence {
		what = "joined"
	}
	fmt.Fprintf(os.Stderr, "%s %s (tenant %s, session %s)\n", what, pos[0], c.Welcome().Tenant, c.Welcome().SessionId)
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.Presence: // nil without --presence: never ready
			if !ok {
				return c.Err()
			}
			fmt.Println(formatPresenceEvent(ev))
		case m, ok := <-sub.C:
			if !ok {
				return c.Err()
			}
			if m.Text {
				fmt.Printf("%s %s\n", m.Subject, m.Data)
			} else {
				fmt.Printf("%s %x\n", m.Subject, m.Data)
			}
			n++
			if *count > 0 && n >= *count {
				return nil
			}
		}
	}
}

func runPub(args []string) error {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	cf := addConnFlags(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: arq pub SUBJECT DATA")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.PublishAck(ctx, pos[0], []byte(pos[1]), client.PublishOptions{Text: true})
}
