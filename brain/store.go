package brain

import (
	"context"
	"errors"
)

// Member is one connection's membership in one room.
type Member struct {
	Tenant, Subject string // the room
	Session         string // connection's session id (unique per node)
	User            string
	Node            string
	Epoch           uint64 // the node's epoch when it joined
	JoinedAt        int64  // Unix ms
	Info            []byte // client info JSON object or nil (<= 256 bytes)
}

// Op is one change in a Batch: a join (Member full) or a leave (Tenant,
// Subject, Session; Reason).
type Op struct {
	Leave  bool
	Member Member
	Reason string
}

// Batch is one node's ordered changes (see pb.PresenceBatch).
//
// A Batch's ops need not fill Member.Node and Member.Epoch: Apply sets
// them from Batch.Node and Batch.Epoch.
//
// A Batch may carry several consecutive regular batches of the node's
// stream at once (a brain that is behind merges what queued): From..Seq,
// with Ends[k] the end in Ops of batch From+k's ops (len(Ends) =
// Seq-From+1, the last = len(Ops)). It applies exactly as those batches
// would one after another: the parts at or below the node's applied seq
// are skipped (Duplicate when all are), a first part beyond seq+1 is a
// Gap, and Applied reports only the ops of the parts applied.
type Batch struct {
	Node    string
	Epoch   uint64
	Seq     uint64 // 1,2,3... within an epoch; with From, the last merged batch
	Ops     []Op
	Sync    uint64 // nonzero: part of a snapshot taken at seq Sync (Ops are all joins)
	SyncEnd bool   // last part of that snapshot
	From    uint64 // nonzero and < Seq: the first of the merged batches From..Seq
	Ends    []int  // with From: the end of each merged batch's ops
}

// first returns the first seq b carries.
func (b *Batch) first() uint64 {
	if b.From != 0 {
		return b.From
	}
	return b.Seq
}

// skipThrough returns how many of b's ops belong to batches with seq <=
// applied (a merged batch partly applied before); applied >= b.first()-1.
func (b *Batch) skipThrough(applied uint64) int {
	if b.From == 0 || applied < b.From {
		return 0
	}
	return b.Ends[applied-b.From]
}

// BatchStatus is what Apply did with a Batch.
type BatchStatus int

const (
	// Applied: the ops were applied; the node's seq is now Batch.Seq (or
	// Sync at SyncEnd).
	Applied BatchStatus = iota
	// Duplicate: already applied (seq <= last; or sync parts/end with
	// last >= Sync), or covered by a snapshot in progress, or a part of a
	// snapshot superseded by a newer one: nothing done.
	Duplicate
	// Gap: seq > last+1: nothing applied; the caller asks the node for a
	// snapshot.
	Gap
	// StaleEpoch: epoch < the node's stored epoch: nothing done.
	StaleEpoch
	// EpochChanged: epoch > stored epoch and members of the old epoch
	// remain: nothing done; the caller runs RemoveNode(node, OldEpoch, ...)
	// until done, then retries.
	EpochChanged
)

var batchStatusNames = [...]string{"applied", "duplicate", "gap", "stale-epoch", "epoch-changed"}

func (s BatchStatus) String() string {
	if s >= 0 && int(s) < len(batchStatusNames) {
		return batchStatusNames[s]
	}
	return "unknown"
}

// Result is the outcome of Apply.
type Result struct {
	Status   BatchStatus
	OldEpoch uint64   // with EpochChanged
	Joined   []Member // members this call added (not already present): the caller publishes their joins
	// Left are the members this call removed, with full data, and the
	// reason of each in LeftReasons[i] (the leave op's Reason, or
	// ReasonSync for members a snapshot's end removed).
	Left        []Member
	LeftReasons []string
}

// Node is what a store knows of a gateway node.
type Node struct {
	ID         string
	Epoch, Seq uint64
	Members    int
}

// ReasonSync is the leave reason of members removed by the end of a
// snapshot (Batch.SyncEnd) because the snapshot did not contain them.
const ReasonSync = "sync"

// MaxBatchOps bounds the ops of one Batch (the gateway sends at most 512).
const MaxBatchOps = 1024

// MaxInfo bounds Member.Info.
const MaxInfo = 256

// Store keeps presence: the members of every room, by node.
//
// Semantics shared by every implementation (the contract suite in
// store_test.go runs against each):
//
//   - Apply on an unknown node registers it (epoch, seq 0) and then treats
//     seq as usual: a first batch with Seq 1 applies, Seq 5 is a Gap, a
//     snapshot is accepted whenever the stored seq < Sync.
//   - A join of a session already present in the room overwrites the
//     stored member (user, info, joined_at) but is not reported in Joined;
//     a leave of an absent member is a no-op and not reported.
//   - Ops apply in order: a join and then a leave of the same member in one
//     batch is reported in both Joined and Left.
//   - A snapshot (Sync != 0) upserts its joins and tags them with
//     generation Sync; its SyncEnd removes the node's members of any other
//     generation (Left, reason ReasonSync) and sets seq = Sync. A snapshot
//     part with Sync below the snapshot in progress is a Duplicate; a
//     regular batch with seq <= the Sync of a snapshot in progress is a
//     Duplicate too (the snapshot covers it). Regular joins of new members
//     get generation 0; a regular join over an existing member keeps its
//     generation.
//   - All members of a node have the node's stored epoch: a batch with a
//     larger epoch is refused (EpochChanged) while members of the old one
//     remain, and accepted (node re-registered with seq 0) once none do.
type Store interface {
	// Apply applies b atomically with respect to every other
	// Apply/RemoveNode on any store client (two brains may apply the same
	// batch: exactly one gets Applied and the Joined/Left lists; the other
	// gets Duplicate).
	Apply(ctx context.Context, b *Batch) (Result, error)
	// RemoveNode removes up to limit members of node whose Epoch <= epoch
	// and returns them (each removed member is returned to exactly one
	// caller, even with concurrent callers); done is true when none
	// remain, and then the node record itself is forgotten if its stored
	// epoch <= epoch.
	RemoveNode(ctx context.Context, node string, epoch uint64, limit int) (left []Member, done bool, err error)
	// Nodes lists the nodes the store knows (a brain that starts re-arms
	// their heartbeat timers).
	Nodes(ctx context.Context) ([]Node, error)
	// Members returns up to limit members of the room in a stable order
	// (by session), starting after cursor ("" = first page); next is "" on
	// the last page. Every member present for the whole paging is returned
	// exactly once.
	Members(ctx context.Context, tenant, subject, cursor string, limit int) (members []Member, next string, err error)
	// Count returns the room's members and distinct users.
	Count(ctx context.Context, tenant, subject string) (members, users int, err error)
	// Ping checks the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}

var (
	// ErrUnavailable: the store could not be reached (Valkey connection
	// errors and timeouts wrap it; test with errors.Is).
	ErrUnavailable = errors.New("brain: store unavailable")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("brain: store closed")
	// ErrInvalidBatch: a Batch that breaks the rules above (no node, seq 0
	// outside a snapshot, a leave in a snapshot, too many ops, info too
	// large, an op without tenant, subject or session).
	ErrInvalidBatch = errors.New("brain: invalid batch")
)

// DefaultPageLimit is the Members limit used when limit <= 0.
const DefaultPageLimit = 1000

// validate checks b; it assumes nothing about the store.
func (b *Batch) validate() error {
	if b.Node == "" {
		return ErrInvalidBatch
	}
	if len(b.Ops) > MaxBatchOps {
		return ErrInvalidBatch
	}
	if b.Sync == 0 && (b.Seq == 0 || b.SyncEnd) {
		return ErrInvalidBatch
	}
	if b.From != 0 {
		if b.Sync != 0 || b.From > b.Seq || uint64(len(b.Ends)) != b.Seq-b.From+1 || b.Ends[len(b.Ends)-1] != len(b.Ops) {
			return ErrInvalidBatch
		}
		prev := 0
		for _, e := range b.Ends {
			if e < prev {
				return ErrInvalidBatch
			}
			prev = e
		}
	} else if len(b.Ends) != 0 {
		return ErrInvalidBatch
	}
	for i := range b.Ops {
		op := &b.Ops[i]
		m := &op.Member
		if m.Tenant == "" || m.Subject == "" || m.Session == "" || len(m.Info) > MaxInfo {
			return ErrInvalidBatch
		}
		if op.Leave && b.Sync != 0 {
			return ErrInvalidBatch
		}
	}
	return nil
}
