// Package web holds the pages arq serve shows: the demo page on the
// WebSocket listener (gateway.Config.DemoFS) and the admin page on the
// admin listener. Everything is embedded; no CDN.
package web

import (
	"embed"
	"io/fs"
	"strings"

	jsclient "github.com/arqonbus/arqonbus/clients/js"
)

//go:embed demo admin
var files embed.FS

// Demo is the demo page: demo/* at the top, the JavaScript client under
// client/ (client/index.js imports ./frames.js).
func Demo() fs.FS {
	d, _ := fs.Sub(files, "demo")
	return overlay{base: d, prefix: "client/", sub: jsclient.FS}
}

// Admin is the admin page (admin/*).
func Admin() fs.FS {
	a, _ := fs.Sub(files, "admin")
	return a
}

// overlay serves sub for names under prefix, base for the rest.
type overlay struct {
	base   fs.FS
	prefix string
	sub    fs.FS
}

func (o overlay) Open(name string) (fs.File, error) {
	if rest, ok := strings.CutPrefix(name, o.prefix); ok {
		return o.sub.Open(rest)
	}
	return o.base.Open(name)
}
