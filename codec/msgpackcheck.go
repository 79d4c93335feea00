package codec

import "fmt"

// maxMsgPackDepth is the deepest nesting of arrays and maps that
// checkMsgPack accepts: a container inside maxMsgPackDepth containers is
// refused. The decoder recurses once per level, so this bounds its stack.
const maxMsgPackDepth = 100

// malformed returns an error that wraps ErrMalformed and names the offset in
// the body where the problem was found.
func malformed(off int, format string, a ...any) error {
	return fmt.Errorf("%w: msgpack: %s at offset %d", ErrMalformed, fmt.Sprintf(format, a...), off)
}

// checkMsgPack reports whether data holds exactly one well-formed MessagePack
// value that is safe to hand to msgpack.Unmarshal. It refuses, with an error
// wrapping ErrMalformed:
//
//   - truncated input and bytes after the value;
//   - the never-used type byte 0xc1;
//   - str, bin and ext lengths larger than the bytes left;
//   - array element counts (and twice the map entry counts) larger than the
//     bytes left, since every element takes at least one byte: the decoder
//     preallocates from these counts, so a 5-byte body could otherwise
//     demand gigabytes;
//   - arrays and maps nested more than maxMsgPackDepth deep, which would
//     otherwise overflow the decoder's stack.
//
// It does not look into the data of ext values; checkMsgPackExts refuses
// the exts that msgpack/v5 would read a map from.
//
// checkMsgPack does not recurse and does not allocate (unless it fails).
func checkMsgPack(data []byte) error {
	_, err := scanMsgPack(data)
	return err
}

// scanMsgPack is checkMsgPack, and also reports whether data holds an ext
// value, which checkMsgPackExts must then look at.
func scanMsgPack(data []byte) (exts bool, err error) {
	// stack[i] is the number of values still expected by the i-th open
	// container (maps count keys and values separately). Only non-empty
	// containers are pushed, and an entry is popped as soon as it reaches 0.
	var stack [maxMsgPackDepth]uint64
	depth := 0
	pos := 0
	for {
		// Read one value header at pos.
		if pos >= len(data) {
			if depth == 0 && pos == 0 {
				return false, malformed(pos, "empty body")
			}
			return false, malformed(pos, "truncated body: %d more value(s) expected", pendingValues(stack[:depth]))
		}
		start := pos
		c := data[pos]
		pos++

		var (
			payload   uint64 // bytes of the value after its header
			children  uint64 // values nested in a container
			container bool
			lenBytes  int // size of the big-endian length field after c
			kind      string
		)
		switch {
		case c <= 0x7f, c >= 0xe0: // positive and negative fixint
		case c <= 0x8f: // fixmap
			container, children, kind = true, 2*uint64(c&0x0f), "map"
		case c <= 0x9f: // fixarray
			container, children, kind = true, uint64(c&0x0f), "array"
		case c <= 0xbf: // fixstr
			payload, kind = uint64(c&0x1f), "str"
		default:
			switch c {
			case 0xc0, 0xc2, 0xc3: // nil, false, true
			case 0xc1:
				return false, malformed(start, "never-used type byte 0xc1")
			case 0xc4, 0xc5, 0xc6: // bin 8/16/32
				lenBytes, kind = 1<<(c-0xc4), "bin"
			case 0xc7, 0xc8, 0xc9: // ext 8/16/32: length, then the type byte
				lenBytes, kind, exts = 1<<(c-0xc7), "ext", true
			case 0xca: // float32
				payload = 4
			case 0xcb: // float64
				payload = 8
			case 0xcc, 0xcd, 0xce, 0xcf: // uint 8/16/32/64
				payload = 1 << (c - 0xcc)
			case 0xd0, 0xd1, 0xd2, 0xd3: // int 8/16/32/64
				payload = 1 << (c - 0xd0)
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1/2/4/8/16: type byte, then data
				payload, exts = 1+1<<(c-0xd4), true
			case 0xd9, 0xda, 0xdb: // str 8/16/32
				lenBytes, kind = 1<<(c-0xd9), "str"
			case 0xdc, 0xdd: // array 16/32
				lenBytes, kind, container = 2<<(c-0xdc), "array", true
			case 0xde, 0xdf: // map 16/32
				lenBytes, kind, container = 2<<(c-0xde), "map", true
			}
		}

		if lenBytes > 0 {
			if len(data)-pos < lenBytes {
				return false, malformed(start, "truncated %s length (type byte 0x%02x)", kind, c)
			}
			var n uint64
			for _, b := range data[pos : pos+lenBytes] {
				n = n<<8 | uint64(b)
			}
			pos += lenBytes
			switch {
			case kind == "ext":
				payload = 1 + n // the type byte, then n bytes of data
			case kind == "map":
				children = 2 * n
			case container:
				children = n
			default:
				payload = n
			}
		}

		left := uint64(len(data) - pos)
		if payload > left {
			if kind != "" {
				return false, malformed(start, "%s length %d exceeds the %d bytes left", kind, payload, left)
			}
			return false, malformed(start, "truncated value (type byte 0x%02x)", c)
		}
		pos += int(payload)

		if container {
			if children > left {
				if kind == "map" {
					return false, malformed(start, "map of %d entries exceeds the %d bytes left", children/2, left)
				}
				return false, malformed(start, "array of %d elements exceeds the %d bytes left", children, left)
			}
			if depth >= maxMsgPackDepth {
				return false, malformed(start, "%s nested deeper than %d levels", kind, maxMsgPackDepth)
			}
			if children > 0 {
				stack[depth] = children
				depth++
				continue
			}
		}

		// A value is complete: count it against the containers it closes.
		for {
			if depth == 0 {
				if pos != len(data) {
					return false, malformed(pos, "%d trailing byte(s) after the value", len(data)-pos)
				}
				return exts, nil
			}
			stack[depth-1]--
			if stack[depth-1] > 0 {
				break
			}
			depth--
		}
	}
}

// pendingValues sums the values still expected by the open containers.
func pendingValues(stack []uint64) uint64 {
	var n uint64
	for _, v := range stack {
		n += v
	}
	return n
}
