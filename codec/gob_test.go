package codec

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
)

// gobMapBomb is a 60-byte gob body for struct{ M map[string]int } whose map
// claims 2^31-1 entries. encoding/gob (up to at least Go 1.26.8) passes that
// count to reflect.MakeMapWithSize unchecked, so decoding it is a fatal
// out-of-memory, not an error: https://go.dev/issue/79539.
const gobMapBomb = "157f030101015401ff8000010101014d01ff820000001eff810401010e6d61705b" +
	"737472696e675d696e7401ff8200010c010400000cff8001fc7fffffff01610200"

// TestGobMapBomb documents a crash of encoding/gob that the Gob codec cannot
// prevent. It only runs with AMQPRPC_GOB_BOMB=1, for checking whether a new
// Go release fixed it: on an affected release it kills the test binary.
func TestGobMapBomb(t *testing.T) {
	if os.Getenv("AMQPRPC_GOB_BOMB") != "1" {
		t.Skip("crashes the process on Go releases without the fix for go.dev/issue/79539; set AMQPRPC_GOB_BOMB=1 to run")
	}
	var out struct{ M map[string]int }
	assert.Error(t, Gob.Unmarshal(mustHex(gobMapBomb), &out))
}
