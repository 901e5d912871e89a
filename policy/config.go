package policy

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultAction is what Decide answers when no policy applies to a request's
// tenant and action.
type DefaultAction int

const (
	// AllowAll allows requests that no policy covers (the development default).
	AllowAll DefaultAction = iota
	// DenyAll denies requests that no policy covers.
	DenyAll
)

// String returns "allow-all" or "deny-all".
func (d DefaultAction) String() string {
	if d == DenyAll {
		return "deny-all"
	}
	return "allow-all"
}

// ParseDefaultAction parses "allow" or "allow-all" (also "") and "deny" or
// "deny-all", as a config file spells them.
func ParseDefaultAction(s string) (DefaultAction, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "allow", "allow-all", "allow_all":
		return AllowAll, nil
	case "deny", "deny-all", "deny_all":
		return DenyAll, nil
	}
	return AllowAll, fmt.Errorf("policy: default %q: want allow or deny", s)
}

// Defaults for the zero fields of Config.
const (
	DefaultTimeout        = 2 * time.Millisecond
	DefaultMaxMemoryPages = 16 // 1 MiB
	DefaultReloadInterval = time.Second
	DefaultLoadTimeout    = time.Second
)

// MaxModuleBytes is the largest policy file the engine reads.
const MaxModuleBytes = 16 << 20

// Config configures an Engine. Zero fields mean defaults.
type Config struct {
	// Dir is the policy directory; "" means no policies (Default applies).
	Dir string
	// Default is what happens to requests no policy covers.
	Default DefaultAction
	// Timeout is the time budget of one policy call; 0 means 2ms.
	Timeout time.Duration
	// MaxMemoryPages caps each instance's linear memory, in 64 KiB pages;
	// 0 means 16 (1 MiB).
	MaxMemoryPages uint32
	// PoolSize is the number of instances per module; 0 means GOMAXPROCS*2.
	PoolSize int
	// ReloadInterval is how often Dir is polled for changes; 0 means 1s,
	// negative disables polling (Reload still works).
	ReloadInterval time.Duration
	// LoadTimeout bounds instantiating a module and its ABI handshake
	// (start function, version, allocator); 0 means 1s.
	LoadTimeout time.Duration
	// CacheDir, if set, keeps compiled modules on disk across restarts.
	CacheDir string
	// Registerer receives the engine's metrics; nil means they are not
	// registered (they are still counted).
	Registerer prometheus.Registerer
	// Logger receives reload errors, fail-closed events and guest logs;
	// nil means slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with its zero fields filled in.
func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxMemoryPages == 0 {
		c.MaxMemoryPages = DefaultMaxMemoryPages
	}
	if c.MaxMemoryPages > 65536 {
		c.MaxMemoryPages = 65536
	}
	if c.PoolSize <= 0 {
		c.PoolSize = runtime.GOMAXPROCS(0) * 2
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = DefaultReloadInterval
	}
	if c.LoadTimeout <= 0 {
		c.LoadTimeout = DefaultLoadTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
