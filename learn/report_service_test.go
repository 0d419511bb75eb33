package learn

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestReportServices: the report names each flow's services (its cgroups
// cut by ReportOptions.Service), distinct and sorted, beside the user; a
// flow of no service shows "-".
func TestReportServices(t *testing.T) {
	cut := func(c string) string {
		if i := strings.Index(c, ".service"); i > 0 {
			return strings.TrimPrefix(c[:i+len(".service")], "/")
		}
		return ""
	}
	flows := []store.Flow{
		{FlowKey: store.FlowKey{UID: 1, Proto: 6, Port: 443}, Hits: 1, Cgroups: []string{"/s/b.service/x", "/s/a.service", "/s/b.service", "/"}},
		{FlowKey: store.FlowKey{UID: 1, Proto: 6, Port: 80}, Hits: 1, Cgroups: []string{"/"}},
	}
	rows := BuildReport(flows, ReportOptions{Now: time.Now(), Service: cut})
	if !slices.Equal(rows[0].Services, []string{}) || !slices.Equal(rows[1].Services, []string{"s/a.service", "s/b.service"}) {
		t.Fatalf("services: %v, %v", rows[0].Services, rows[1].Services)
	}
	var b bytes.Buffer
	if err := WriteReportTable(&b, rows, nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "SERVICES") || !strings.Contains(b.String(), "s/a.service,s/b.service") {
		t.Errorf("report:\n%s", b.String())
	}
}
