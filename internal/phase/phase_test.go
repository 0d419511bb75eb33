package phase

import (
	"testing"
	"time"
)

func TestStartFromEnvironment(t *testing.T) {
	at := time.Unix(1764578000, 123456789)
	if got := start("1764578000123456789"); !got.Equal(at) {
		t.Errorf("start(ns) = %v, want %v", got, at)
	}
	before := time.Now()
	if got := start("1"); got.Before(before) {
		t.Errorf("start(\"1\") = %v, want now (not a time)", got)
	}
}
