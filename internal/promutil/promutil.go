// Package promutil holds what the Prometheus collectors share.
package promutil

import "github.com/prometheus/client_golang/prometheus"

// Describe sends ds on ch: a collector's Describe.
func Describe(ch chan<- *prometheus.Desc, ds ...*prometheus.Desc) {
	for _, d := range ds {
		ch <- d
	}
}
