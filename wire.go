package amqprpc

import (
	"crypto/rand"
	"encoding/hex"
	"mime"
	"strconv"
	"strings"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// The AMQP mapping of a net/rpc call (see amqprpc.go, "Wire format"):
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

// PingMethod is the method every Server answers, whatever it serves, by
// echoing its args (the request's body, in the request's content type)
// without running a handler: a caller learns in one round trip that the
// path client → broker → some server → client works, and how fast. The
// service name "amqprpc" is reserved for it (PROTOCOL.md, "Serving"): a
// service registered under that name is not reachable. The amqprpc
// command's ping subcommand calls it.
const PingMethod = reservedService + ".Ping"

// reservedService is the service name of amqprpc's own methods.
const reservedService = "amqprpc"

// Error replies that the server itself makes, rather than a handler, say
// what they are in headerErrorCode, which a handler cannot set: a client
// then returns the matching error value, not the text.
const (
	headerErrorCode = "x-amqprpc-error-code"
	// codeNoRoute: a request put back after ErrIgnoreRequest found its
	// queue gone; the text is a noRouteError's.
	codeNoRoute = "no_route"
	// codeNotTaken: every server that took the request ignored it,
	// ignoreLimit times in all; the client returns ErrNotTaken.
	codeNotTaken = "not_taken"
)

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
//
// ct is a MIME media type (RFC 2045, as mime.ParseMediaType reads it): the
// type is matched without regard to case or parameters, so that
// "application/json; charset=utf-8" is JSON; a charset other than UTF-8 is
// refused. "application/x-msgpack" is msgpack too.
func decoderFor(ct string, own codec.Codec) (codec.Codec, bool) {
	switch { // the usual case, without parsing
	case own != nil && own.ContentType() == ct:
		return own, true
	case ct == msgpackType:
		return codec.MsgPack, true
	case ct == jsonType:
		return codec.JSON, true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return nil, false
	}
	if own != nil {
		if ot, _, err := mime.ParseMediaType(own.ContentType()); err == nil && ot == mt {
			return own, true
		}
	}
	switch mt {
	case msgpackType, "application/x-msgpack", "application/vnd.msgpack":
		return codec.MsgPack, true
	case jsonType:
		return codec.JSON, true
	}
	return nil, false
}

// The content types of the codecs every client and server reads.
var (
	msgpackType = codec.MsgPack.ContentType()
	jsonType    = codec.JSON.ContentType()
)

// publisher is what the codecs need of a transport.Publisher: a seam for
// unit tests of their decisions, which a fake publisher drives.
type publisher interface {
	Publish(m transport.Message, done transport.Confirmed) error
}
