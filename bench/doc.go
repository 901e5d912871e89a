// Package bench holds benchmarks that span packages: frames in through a
// real gateway on loopback, frames out to real subscriber sockets. The load
// generator lives in bench/loadgen.
package bench
