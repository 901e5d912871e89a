package spine

import (
	"net"
	"strconv"
	"unsafe"
)

func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}
