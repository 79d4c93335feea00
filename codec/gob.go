package codec

import (
	"bytes"
	"encoding/gob"
)

// gobCodec encodes with encoding/gob, net/rpc's own encoding. Each body is a
// self-contained gob stream (type description included), so it is larger
// than with a long-lived gob connection. encoding/gob is not hardened against
// hostile input: use it only between peers that trust each other. For
// example, up to at least Go 1.26.8 it preallocates a map from the entry
// count in the body, so a 60-byte body decoded into a struct with a map
// field crashes the process with a fatal out-of-memory that no recover can
// catch (https://go.dev/issue/79539; see TestGobMapBomb).
type gobCodec struct{}

func (gobCodec) ContentType() string { return "application/x-gob" }

func (gobCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (gobCodec) Unmarshal(data []byte, v any) error {
	if v == nil {
		return nil
	}
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}
