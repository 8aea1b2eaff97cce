// Package logwriter is a bounded, non-blocking io.Writer for a process's
// own log: the master's log lines go to its stderr, which it shares with
// its children and which a reader may stop reading, and a log line must
// never delay supervision.
//
// # Use
//
//	w := logwriter.New(os.Stderr, logwriter.Options{
//		Notice: logwriter.SlogNotice(func(out io.Writer) slog.Handler { return slog.NewJSONHandler(out, nil) }),
//	})
//	log := slog.New(slog.NewJSONHandler(w, nil))
//	...
//	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
//	err := w.Close(ctx) // the last lines written, or given up on
//
// # Invariants
//
// Each Write is one record (a slog handler writes each record with one
// Write). Write copies the record into a buffer of at most Options.Size
// bytes and returns at once; a goroutine of the Writer's own writes the
// records to the destination one Write each, in order. A record that does
// not fit in what is left of the buffer is dropped whole and counted; no
// record is ever cut.
//
// Where records were dropped (the buffer was full, or the destination
// failed), one notice saying how many lines and bytes is written before
// the next record that is: the log says where its gap is and how big it
// was. The notice is formatted by Options.Notice, so that it is in the
// format of the other lines (SlogNotice makes it a slog record of the
// same handler, so that a JSON log stays one JSON object per line). If
// the notice cannot be written, the record after it is dropped too, so
// that no record is ever written after an unannounced gap. Drops at the
// end are announced once the destination takes writes again, or at Close.
//
// Dropped reports the totals at any time, from any goroutine, for a
// metric.
//
// Close stops taking records and waits, until its context is done, for
// the buffer to be written; a destination that blocks for good costs the
// caller the context's deadline, never more. The goroutine blocked in the
// destination's Write stays so until that Write returns.
package logwriter
