package amqprpc

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/amqprpc/amqprpc/codec"
)

// The AMQP mapping of a net/rpc call (see doc.go, "Wire format"):
//
//	type            ServiceMethod ("Math.SumNumbers")
//	correlation_id  <random per-client prefix>.<net/rpc seq>
//	message_id      same as correlation_id on requests
//	reply_to        the client id: a routing key on rpc_<ns>_response
//	content_type    the body's codec
//	expiration      the caller's remaining time, in milliseconds
//	headers[error]  on replies, the error text of a failed call
//	body            args, or reply; empty on error replies
const headerError = "error"

// randomHex returns n random bytes from crypto/rand as 2n hex characters.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("amqprpc: crypto/rand: " + err.Error()) // crypto/rand does not fail on supported systems
	}
	return hex.EncodeToString(b)
}

// correlationID is prefix (which ends in ".") followed by seq in decimal.
func correlationID(prefix string, seq uint64) string {
	var buf [64]byte // on the stack for any usual prefix: one allocation, the string
	b := append(buf[:0], prefix...)
	return string(strconv.AppendUint(b, seq, 10))
}

// parseCorrelationID returns the seq of an id made by correlationID with the
// same prefix; ok is false for anything else.
func parseCorrelationID(prefix, id string) (seq uint64, ok bool) {
	rest, found := strings.CutPrefix(id, prefix)
	if !found {
		return 0, false
	}
	seq, err := strconv.ParseUint(rest, 10, 64)
	return seq, err == nil
}

// decoderFor returns the codec that decodes bodies of content type ct: own
// (the one configured with WithCodec), msgpack or JSON. gob is decoded only
// when it is own: encoding/gob is not safe on hostile input (a 60-byte body
// can make it allocate without bound), so a server does not accept it from
// strangers unless told to.
func decoderFor(ct string, own codec.Codec) (codec.Codec, bool) {
	switch {
	case own != nil && own.ContentType() == ct:
		return own, true
	case ct == codec.MsgPack.ContentType():
		return codec.MsgPack, true
	case ct == codec.JSON.ContentType():
		return codec.JSON, true
	}
	return nil, false
}
