package sqlite

// What the external tests need to reach inside.

// JournalRecords returns how many records the journal at path holds.
func JournalRecords(path string) (int, error) {
	j, records, err := openJournal(path, 0, true)
	if err != nil {
		return 0, err
	}
	j.close()
	return len(records), nil
}

// SetMaxIdle makes the idle token cache keep n locks, and returns what
// puts it back.
func SetMaxIdle(n int) (restore func()) {
	old := maxIdle
	maxIdle = n
	return func() { maxIdle = old }
}

// IdleLocks returns how many idle locks memory keeps the token of.
func (s *Store) IdleLocks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.c.mem.idle)
}
