package sqlite

// What the external tests need to reach inside.

// SetJournalSize makes journals opened from now on size bytes, so that
// tests can fill them fast; it returns a function that restores the size.
func SetJournalSize(size int64) (restore func()) {
	old := journalSize
	journalSize = size
	return func() { journalSize = old }
}

// JournalRecords returns how many records the journal at path holds.
func JournalRecords(path string) (int, error) {
	j, records, err := openJournal(path)
	if err != nil {
		return 0, err
	}
	j.close()
	return len(records), nil
}
