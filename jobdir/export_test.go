package jobdir

// SetBeforeOpen makes d call f between the check of a path and the call
// that opens it, to change the directory in that window.
func SetBeforeOpen(d *Dir, f func(name string)) { d.beforeOpen = f }
