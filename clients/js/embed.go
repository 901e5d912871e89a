// Package jsclient embeds the JavaScript client (index.js, frames.js) so
// the gateway can serve it to the demo page (web/). The JavaScript package
// itself is described in README.md.
package jsclient

import "embed"

// FS holds index.js and frames.js.
//
//go:embed index.js frames.js
var FS embed.FS
