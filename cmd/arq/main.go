// Command arq runs and pokes an ArqonBus node.
//
//	arq serve [--listen ADDR] [--admin ADDR] [--nats URL] [--config FILE]
//	arq token --tenant T --user U [--ttl 1h] [--role R] [--cap CAP]... (--sub is an alias of --user)
//	arq sub SUBJECT [--url URL] [--token T | --tenant T --user U] [--presence [--info JSON]]
//	arq pub SUBJECT DATA [--url URL] [--token T | --tenant T --user U]
//	arq presence SUBJECT [--count] [--limit N [--cursor C]] [--url URL] [--token T | --tenant T --user U]
//	arq status [--admin ADDR | --config FILE] [--json]
//	arq version
//
// With no configuration, serve runs a complete single node on loopback: the
// gateway, an embedded NATS server, a dev HS256 secret created in
// .arqon/dev-secret (mode 0600) under the working directory, and a printed
// sample token.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func usage() {
	fmt.Fprint(os.Stderr, `arq: the ArqonBus command

Usage:
  arq serve [--listen ADDR] [--admin ADDR] [--nats URL] [--config FILE] [--policy-dir DIR]
  arq token --tenant T --user U [--ttl 1h] [--role R] [--cap CAP]... [--no-caps] [--secret-file FILE]
          (CAP: sub:PATTERN, pub:PATTERN or presence:PATTERN; --sub is an alias of --user)
  arq sub SUBJECT [--url URL] [--token T | --tenant T --user U] [--count N] [--json]
          [--presence [--info JSON]]
  arq pub SUBJECT DATA [--url URL] [--token T | --tenant T --user U] [--json]
  arq presence SUBJECT [--count] [--limit N [--cursor C]] [--url URL] [--token T | --tenant T --user U] [--json]
  arq api publish|broadcast|presence|disconnect|info [--url URL] [--key K] [--tenant T] ...
  arq brain --nats URL [--valkey ADDR] [--admin ADDR] [--config FILE]
  arq status [--admin ADDR | --config FILE] [--json]   (exit 0 ready, 1 not ready, 2 unreachable)
  arq config check FILE | arq config default
  arq version

Run "arq COMMAND --help" for a command's flags.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(args)
	case "token":
		err = runToken(args)
	case "sub":
		err = runSub(args)
	case "pub":
		err = runPub(args)
	case "presence":
		err = runPresence(args)
	case "brain":
		err = runBrain(args)
	case "api":
		err = runAPI(args)
	case "status":
		err = runStatus(args)
	case "config":
		err = runConfig(args)
	case "version", "--version", "-v":
		fmt.Println("arq", version)
	case "help", "--help", "-h":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "arq: unknown command %q\n\n", cmd)
		usage()
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "arq:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
