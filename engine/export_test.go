package engine

// Queued returns how many operations wait for the next group.
func Queued(e *Engine) int {
	e.group.mu.Lock()
	defer e.group.mu.Unlock()
	return len(e.group.queue)
}
