package dlm

import (
	"unicode"
	"unicode/utf8"
)

// Limits on names and identifiers (README).
const (
	MaxNameLen     = 256
	MaxHolderLen   = 128
	MaxIdemKeyLen  = 128
	MaxTenantLen   = 63
	MinTTLMillis   = 100
	DefaultTTLMs   = 30000
	MaxRequestBody = 64 << 10
)

// nameChars marks the bytes allowed in a lock name:
// A-Z a-z 0-9 . _ ~ : / @ + = -
var nameChars = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "._~:/@+=-" {
		t[c] = true
	}
	return t
}()

// ValidateName checks a lock name: 1–256 characters of
// A-Z a-z 0-9 . _ ~ : / @ + = -.
func ValidateName(name string) error {
	if name == "" {
		return Invalid("name", "must not be empty")
	}
	return checkNameChars("name", name)
}

// ValidatePrefix checks a name prefix for listing: like a name, but may be
// empty.
func ValidatePrefix(prefix string) error { return checkNameChars("prefix", prefix) }

func checkNameChars(field, s string) error {
	if len(s) > MaxNameLen {
		return Invalid(field, "longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !nameChars[s[i]] {
			return Invalid(field, "character %q at %d is not allowed (use A-Z a-z 0-9 . _ ~ : / @ + = -)", s[i], i)
		}
	}
	return nil
}

// validatePrintable checks a 1–max character string of printable UTF-8:
// no control characters, and none of the invisible format characters
// (Unicode category Cf: bidi overrides and isolates such as U+202E,
// zero-width spaces and joiners, the byte order mark), line or paragraph
// separators, or private-use characters, which could make one holder look
// like another wherever it is shown.
func validatePrintable(field, s string, max int) error {
	if s == "" {
		return Invalid(field, "must not be empty")
	}
	n := 0
	for _, r := range s {
		n++
		if r == utf8.RuneError || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co, unicode.Bidi_Control) {
			return Invalid(field, "must be printable characters, without control, invisible or bidi format characters (found %U)", r)
		}
	}
	if n > max {
		return Invalid(field, "longer than %d characters", max)
	}
	return nil
}

// ValidateHolderID checks a holder id: 1–128 printable characters (see
// validatePrintable).
func ValidateHolderID(s string) error { return validatePrintable("holder_id", s, MaxHolderLen) }

// ValidateIdempotencyKey checks an idempotency key: 1–128 printable characters.
func ValidateIdempotencyKey(s string) error {
	return validatePrintable("idempotency_key", s, MaxIdemKeyLen)
}

// ValidateTenantName checks a tenant name: 1–63 characters of a-z 0-9 - _,
// starting with a letter or digit.
func ValidateTenantName(s string) error {
	if s == "" {
		return Invalid("name", "must not be empty")
	}
	if len(s) > MaxTenantLen {
		return Invalid("name", "longer than %d characters", MaxTenantLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_')
		if !ok {
			return Invalid("name", "tenant names are a-z 0-9 - _ and start with a letter or digit")
		}
	}
	return nil
}
