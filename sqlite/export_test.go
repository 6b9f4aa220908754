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
