package store

import (
	"encoding/json"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A fast writer of flow records: what json.Marshal writes for a
// flowRecord, byte for byte, without reflection (approving 100,000 new
// flows spent a third of its time in encoding/json). A string that JSON
// escapes, or a time json.Marshal refuses, goes to encoding/json whole;
// TestFlowRecordWriter and FuzzFlowRecordWriter check the bytes.

// appendFlowRecord appends rec as json.Marshal(&rec) writes it.
func appendFlowRecord(b []byte, rec *flowRecord) ([]byte, error) {
	return appendFlowRecordAt(b, rec, nil)
}

// approvedAtText keeps the text of the last approval time written: an
// apply writes the same time in every flow it approves.
type approvedAtText struct {
	t    time.Time
	text []byte
	ok   bool
}

// appendTime is appendTime through the cache c (nil: none).
func (c *approvedAtText) appendTime(b []byte, t time.Time, ok bool) ([]byte, bool) {
	if c == nil {
		return appendTime(b, t, ok)
	}
	if c.text == nil || t != c.t { // == : the same wall clock, monotonic reading and zone
		start := len(b)
		var tok bool
		b, tok = appendTime(b, t, true)
		c.t, c.text, c.ok = t, append(c.text[:0], b[start:]...), tok
		return b, ok && tok
	}
	return append(b, c.text...), ok && c.ok
}

// appendFlowRecordAt is appendFlowRecord that writes the approval time
// through c (nil: none).
func appendFlowRecordAt(b []byte, rec *flowRecord, c *approvedAtText) ([]byte, error) {
	f := &rec.Flow
	start := len(b)
	ok := true
	b = append(b, `{"hits":`...)
	b = strconv.AppendUint(b, f.Hits, 10)
	b = append(b, `,"first_seen":`...)
	b, ok = appendTime(b, f.FirstSeen, ok)
	b = append(b, `,"last_seen":`...)
	b, ok = appendTime(b, f.LastSeen, ok)
	b, ok = appendStrings(b, `,"hostnames":`, f.Hostnames, ok)
	b, ok = appendStrings(b, `,"processes":`, f.Processes, ok)
	if len(f.Comms) > 0 {
		b = append(b, `,"comms":[`...)
		for i, c := range f.Comms {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"exe":`...)
			b, ok = appendString(b, c.Exe, ok)
			b = append(b, `,"comm":`...)
			b, ok = appendString(b, c.Comm, ok)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b, ok = appendStrings(b, `,"cgroups":`, f.Cgroups, ok)
	b, ok = appendStrings(b, `,"presented":`, f.Presented, ok)
	if f.Dropped != 0 {
		b = strconv.AppendUint(append(b, `,"dropped":`...), f.Dropped, 10)
	}
	if f.Approved != 0 {
		b = strconv.AppendUint(append(b, `,"approved":`...), f.Approved, 10)
	}
	if !f.ApprovedAt.IsZero() {
		b, ok = c.appendTime(append(b, `,"approved_at":`...), f.ApprovedAt, ok)
	}
	b, ok = appendStrings(b, `,"approved_names":`, f.ApprovedNames, ok)
	if !f.Retired.IsZero() {
		b, ok = appendTime(append(b, `,"retired":`...), f.Retired, ok)
	}
	b = append(b, '}')
	if !ok {
		data, err := json.Marshal(rec)
		return append(b[:start], data...), err
	}
	return b, nil
}

// appendTime appends t as time.Time.MarshalJSON does; ok false for a
// time it refuses or writes otherwise (a year outside 0-9999).
func appendTime(b []byte, t time.Time, ok bool) ([]byte, bool) {
	if t == (time.Time{}) { // a flow never seen (a new flow an apply approves)
		return append(b, `"0001-01-01T00:00:00Z"`...), ok
	}
	if y := t.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := t.Zone(); off%60 != 0 || off <= -24*3600 || off >= 24*3600 {
		return b, false // offsets MarshalJSON refuses or writes otherwise
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), ok
}

// appendStrings appends name and the list when it is not empty
// (omitempty).
func appendStrings(b []byte, name string, list []string, ok bool) ([]byte, bool) {
	if len(list) == 0 {
		return b, ok
	}
	b = append(append(b, name...), '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b, ok = appendString(b, s, ok)
	}
	return append(b, ']'), ok
}

// appendString appends s quoted; ok false when JSON would escape any of
// it (a quote, a backslash, a control, HTML or non-ASCII character).
func appendString(b []byte, s string, ok bool) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), ok
}

// putFlowRecord stores rec under key (a new slice each time: bbolt keeps
// the value until the transaction ends).
func putFlowRecord(b *bolt.Bucket, key []byte, rec *flowRecord) error {
	data, err := appendFlowRecord(make([]byte, 0, 256), rec)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}
