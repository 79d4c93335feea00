package codec

import (
	"bytes"
	"encoding/gob"
)

// gobCodec encodes with encoding/gob, net/rpc's own encoding. Each body is a
// self-contained gob stream (type description included), so it is larger
// than with a long-lived gob connection. encoding/gob is not hardened against
// hostile input: use it only between peers that trust each other.
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
