package brain

import (
	"context"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/arqonbus/arqonbus/pb"
)

// The brain encodes what it sends by hand, straight from the store's data:
// a page of 1000 members goes from the store's strings into one buffer
// without a Member or pb.PresenceMember per member in between, and an
// event without a pb.PresenceEvent. The encodings are the messages'
// (pb/proto/arqon/v1: PresenceMember, PresenceAnswer, PresenceEvent),
// fields in number order, zero values left out; the tests decode them
// with the generated code.

// memberPager is a Store that appends a page of members to an encoded
// PresenceAnswer itself (field 1, one PresenceMember each), with the same
// paging as Members.
type memberPager interface {
	appendMembers(ctx context.Context, dst []byte, tenant, subject, cursor string, limit int) ([]byte, string, error)
}

// pbMemberSize is the encoded size of a PresenceMember.
func pbMemberSize(user, session, node string, joinedAt int64, info []byte) int {
	n := 0
	if len(user) > 0 {
		n += 1 + protowire.SizeBytes(len(user))
	}
	if len(session) > 0 {
		n += 1 + protowire.SizeBytes(len(session))
	}
	if len(node) > 0 {
		n += 1 + protowire.SizeBytes(len(node))
	}
	if joinedAt != 0 {
		n += 1 + protowire.SizeVarint(uint64(joinedAt))
	}
	if len(info) > 0 {
		n += 1 + protowire.SizeBytes(len(info))
	}
	return n
}

// appendPBMember appends a PresenceMember as field num of its parent.
func appendPBMember(dst []byte, num protowire.Number, user, session, node string, joinedAt int64, info []byte) []byte {
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(pbMemberSize(user, session, node, joinedAt, info)))
	if len(user) > 0 {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, user)
	}
	if len(session) > 0 {
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendString(dst, session)
	}
	if len(node) > 0 {
		dst = protowire.AppendTag(dst, 3, protowire.BytesType)
		dst = protowire.AppendString(dst, node)
	}
	if joinedAt != 0 {
		dst = protowire.AppendTag(dst, 4, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(joinedAt))
	}
	if len(info) > 0 {
		dst = protowire.AppendTag(dst, 5, protowire.BytesType)
		dst = protowire.AppendBytes(dst, info)
	}
	return dst
}

// appendAnswerMember appends m as a PresenceAnswer's member (field 1).
func appendAnswerMember(dst []byte, m *Member) []byte {
	return appendPBMember(dst, 1, m.User, m.Session, m.Node, m.JoinedAt, m.Info)
}

// appendAnswerTail appends a PresenceAnswer's count, users and cursor.
func appendAnswerTail(dst []byte, count, users int, cursor string) []byte {
	if count != 0 {
		dst = protowire.AppendTag(dst, 2, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(uint32(count)))
	}
	if users != 0 {
		dst = protowire.AppendTag(dst, 3, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(uint32(users)))
	}
	if cursor != "" {
		dst = protowire.AppendTag(dst, 4, protowire.BytesType)
		dst = protowire.AppendString(dst, cursor)
	}
	return dst
}

// appendAnswerError appends a PresenceAnswer's error code and message.
func appendAnswerError(dst []byte, code pb.ErrorCode, msg string) []byte {
	dst = protowire.AppendTag(dst, 5, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(code))
	dst = protowire.AppendTag(dst, 6, protowire.BytesType)
	return protowire.AppendString(dst, msg)
}

// appendEvent appends a PresenceEvent for m.
func appendEvent(dst []byte, m *Member, leave bool, reason string) []byte {
	if len(m.Tenant) > 0 {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, m.Tenant)
	}
	if len(m.Subject) > 0 {
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendString(dst, m.Subject)
	}
	if leave {
		dst = protowire.AppendTag(dst, 3, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	dst = appendPBMember(dst, 4, m.User, m.Session, m.Node, m.JoinedAt, m.Info)
	if len(reason) > 0 {
		dst = protowire.AppendTag(dst, 5, protowire.BytesType)
		dst = protowire.AppendString(dst, reason)
	}
	return dst
}

// answerBufs recycles the buffers of encoded answers (NATS copies what
// it sends).
var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
