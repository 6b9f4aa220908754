package dlmhttp

import (
	"bytes"
	"encoding/json"
	"testing"
)

// duplicateKeyByTokens is duplicateKey written the slow, obvious way, with
// encoding/json's tokenizer: the reference the scan is checked against.
func duplicateKeyByTokens(b []byte) (string, bool) {
	type open struct {
		keys    map[string]bool // nil in an array
		wantKey bool
	}
	var stack []open
	d := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.Token()
		if err != nil {
			return "", false
		}
		top := len(stack) - 1
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, open{keys: map[string]bool{}, wantKey: true})
				continue
			case '[':
				stack = append(stack, open{})
				continue
			}
			stack, top = stack[:top], top-1
		case string:
			if top >= 0 && stack[top].wantKey {
				if stack[top].keys[t] {
					return t, true
				}
				stack[top].keys[t], stack[top].wantKey = true, false
				continue
			}
		}
		if top >= 0 && stack[top].keys != nil {
			stack[top].wantKey = true
		}
	}
}

var duplicateKeySeeds = []string{
	`{}`,
	`{"a":1,"b":2}`,
	`{"a":1,"a":2}`,
	`{"a":{"b":1},"b":2}`,
	`{"a":[{"x":1,"x":2}]}`,
	`{"a":[{"x":1},{"x":2}]}`,
	`{"a":"\"a\":","b":"}{,"}`,
	`{"a":1,"\u0061":2}`,
	`{"k\\":1,"k":2}`,
	`{"k\\":1,"k\\":2}`,
	`[{"a":[1,[2,{"b":3,"c":{"b":4}}]],"b":[]}]`,
	` { "a" : 1 , "a" : 2 } `,
	`"a"`,
	`{"":1,"":2}`,
	"{\"\xb2\":0,\"\xb3\":0}", // invalid UTF-8: both keys decode to U+FFFD
	`{"é":1,"\u00e9":2}`,
}

func TestDuplicateKey(t *testing.T) {
	for _, s := range duplicateKeySeeds {
		gotKey, got := duplicateKey([]byte(s))
		wantKey, want := duplicateKeyByTokens([]byte(s))
		if got != want || gotKey != wantKey {
			t.Errorf("duplicateKey(%s) = %q, %v; want %q, %v", s, gotKey, got, wantKey, want)
		}
	}
}

func FuzzDuplicateKey(f *testing.F) {
	for _, s := range duplicateKeySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return // duplicateKey is only ever given parsed JSON
		}
		gotKey, got := duplicateKey([]byte(s))
		wantKey, want := duplicateKeyByTokens([]byte(s))
		if got != want || gotKey != wantKey {
			t.Errorf("duplicateKey(%s) = %q, %v; want %q, %v", s, gotKey, got, wantKey, want)
		}
	})
}
