package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// ruleFile is the part of Prometheus' rule file format we use.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// query is one PromQL expression of the dashboard or the rules, and where
// it comes from.
type query struct {
	where string
	expr  string
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile("prometheus/egress-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("egress-rules.yml: %v", err)
	}
	return rf
}

// ruleQueries returns every rule's expression, and the names the
// recording rules define.
func ruleQueries(t *testing.T) ([]query, []string) {
	t.Helper()
	var qs []query
	var recorded []string
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			qs = append(qs, query{"egress-rules.yml " + g.Name + "/" + name, r.Expr})
			if r.Record != "" {
				recorded = append(recorded, r.Record)
			}
		}
	}
	return qs, recorded
}

// grafanaVars are the dashboard's variables, as Grafana would substitute
// them, so that the parser sees what Prometheus is sent.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h", "$instance", ".*")

// dashboardQueries returns every PromQL expression of the dashboard:
// targets, annotations, and the metric of label_values() variables.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	d := loadDashboard(t)
	var qs []query
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, query{fmt.Sprintf("egress.json panel %d %q %s", p.ID, p.Title, tg.RefID), grafanaVars.Replace(tg.Expr)})
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			qs = append(qs, query{"egress.json annotation " + a.Name, grafanaVars.Replace(a.Expr)})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		_ = json.Unmarshal(v.Query, &q)
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %s is not label_values(selector, label)", v.Name, v.Query)
			continue
		}
		qs = append(qs, query{"egress.json variable " + v.Name, m[1]})
	}
	return qs
}

type dashboard struct {
	UID         string `json:"uid"`
	Title       string `json:"title"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"` // a string, or {"query": ...}
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("grafana/egress.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("egress.json: %v", err)
	}
	return d
}

// selector is a metric a query reads, with the labels it matches on and
// groups by.
type selector struct {
	name   string
	labels []string
}

// parseQuery parses q with Prometheus' PromQL parser and returns the
// metrics it reads, with the labels of its matchers, and every label it
// aggregates or matches by.
func parseQuery(q query) ([]selector, []string, error) {
	expr, err := parser.ParseExpr(q.expr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %q: %w", q.where, q.expr, err)
	}
	var sels []selector
	var grouping []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			s := selector{name: n.Name}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel {
					s.labels = append(s.labels, m.Name)
				}
			}
			sels = append(sels, s)
		case *parser.AggregateExpr:
			grouping = append(grouping, n.Grouping...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				grouping = append(grouping, n.VectorMatching.MatchingLabels...)
			}
		}
		return nil
	})
	return sels, grouping, nil
}

// TestRulesAndDashboardParse: every expression of the alert rules and the
// dashboard parses with Prometheus' own PromQL parser and reads at least
// one metric; every alert has a duration, a severity and annotations whose
// templates render; the dashboard's panels have unique ids, a datasource
// and do not overlap.
func TestRulesAndDashboardParse(t *testing.T) {
	rq, _ := ruleQueries(t)
	qs := append(rq, dashboardQueries(t)...)
	if len(rq) < 6 || len(qs) < 20 {
		t.Fatalf("%d rule and %d dashboard queries: the files were not read", len(rq), len(qs)-len(rq))
	}
	for _, q := range qs {
		sels, _, err := parseQuery(q)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s: %q reads no metric", q.where, q.expr)
		}
	}
	checkAlerts(t)
	checkPanels(t)
}

func checkAlerts(t *testing.T) {
	t.Helper()
	seen := map[string]bool{}
	alerts := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("group %s: a rule must have exactly one of alert and record: %+v", g.Name, r)
				continue
			}
			if r.Record != "" {
				if !model.UTF8Validation.IsValidMetricName(r.Record) || !strings.Contains(r.Record, ":") {
					t.Errorf("record %q: not a level:metric:operations name", r.Record)
				}
				continue
			}
			alerts++
			if seen[r.Alert] {
				t.Errorf("alert %s twice", r.Alert)
			}
			seen[r.Alert] = true
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q", r.Alert, s)
			}
			for _, k := range []string{"summary", "description"} {
				if err := renderAnnotation(r.Annotations[k]); err != nil || r.Annotations[k] == "" {
					t.Errorf("alert %s: annotation %s %q: %v", r.Alert, k, r.Annotations[k], err)
				}
			}
		}
	}
	for _, want := range []string{"EgressDeniedSpikeAfterApply", "EgressLearnerLosingEvents", "EgressMonitorDown", "EgressFollowerDown", "EgressTableMissing"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// renderAnnotation renders an annotation template as Prometheus does (Go
// text/template, $labels and $value defined first), with a sample alert.
func renderAnnotation(text string) error {
	tmpl, err := template.New("a").Option("missingkey=zero").Parse("{{$labels := .Labels}}{{$value := .Value}}" + text)
	if err != nil {
		return err
	}
	var b strings.Builder
	return tmpl.Execute(&b, struct {
		Labels map[string]string
		Value  float64
	}{map[string]string{"instance": "h:9310", "table": "egress"}, 1.5})
}

func checkPanels(t *testing.T) {
	t.Helper()
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q", d.UID, d.Title)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]int{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d not unique", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panel %d %q overlaps panel %d", p.ID, p.Title, other)
					break
				}
				used[cell{x, y}] = p.ID
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || p.Description == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, description %q, %d targets", p.Title, p.Datasource.UID, p.Description, len(p.Targets))
		}
	}
}

// TestScrapeJobsMatchTheRules: the jobs the rules name are the jobs of
// scrape.yml, on the ports the units serve.
func TestScrapeJobsMatchTheRules(t *testing.T) {
	data, err := os.ReadFile("prometheus/scrape.yml")
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &sc); err != nil {
		t.Fatal(err)
	}
	ports := map[string]string{}
	for _, c := range sc.ScrapeConfigs {
		for _, s := range c.StaticConfigs {
			for _, tg := range s.Targets {
				_, port, _ := strings.Cut(tg, ":")
				ports[c.JobName] = port
			}
		}
	}
	units := map[string]string{"egress-watch": "egress-enforce-watch.service", "egress-learn": "egress-learn.service", "egress-follow": "egress-enforce-follow.service",
		"egress-dns-policy": "egress-enforce-dns-policy.service",
		"egress-namecheck":  "egress-enforce-namecheck.service"}
	for job, unit := range units {
		data, err := os.ReadFile("systemd/" + unit)
		if err != nil {
			t.Fatal(err)
		}
		if ports[job] == "" || !strings.Contains(string(data), "--metrics-addr 127.0.0.1:"+ports[job]) {
			t.Errorf("job %s scrapes port %q; %s serves elsewhere", job, ports[job], unit)
		}
	}
	rq, _ := ruleQueries(t)
	jobRe := regexp.MustCompile(`job\s*=~?\s*"([^"]+)"`)
	for _, q := range rq {
		for _, m := range jobRe.FindAllStringSubmatch(q.expr, -1) {
			if _, ok := ports[m[1]]; !ok {
				t.Errorf("%s: job %q is not in scrape.yml", q.where, m[1])
			}
		}
	}
}

// exportProblems lists every metric or label a query uses that the
// scraped binaries do not export. exported maps each sample name to its
// label names; Prometheus adds up and the job and instance labels.
func exportProblems(qs []query, recorded []string, exported map[string][]string) []string {
	synthetic := map[string][]string{"up": nil}
	for _, r := range recorded {
		synthetic[r] = []string{"table"}
	}
	var problems []string
	for _, q := range qs {
		sels, grouping, err := parseQuery(q)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		var readable []string
		for _, s := range sels {
			labels, ok := exported[s.name]
			if !ok {
				labels, ok = synthetic[s.name]
			}
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: metric %s is not exported by egress-learn run, egress-enforce watch, follow, dns-policy watch or namecheck", q.where, s.name))
				continue
			}
			readable = append(readable, labels...)
			for _, l := range s.labels {
				if !slices.Contains(labels, l) && l != "job" && l != "instance" {
					problems = append(problems, fmt.Sprintf("%s: %s has no label %q (it has %v)", q.where, s.name, l, labels))
				}
			}
		}
		for _, l := range grouping {
			if !slices.Contains(readable, l) && l != "job" && l != "instance" {
				problems = append(problems, fmt.Sprintf("%s: groups or matches by %q, a label none of its metrics has", q.where, l))
			}
		}
	}
	return problems
}

// TestExportProblemsCanFail: the check catches a metric nobody exports, a
// label a metric lacks and a grouping by such a label, and accepts a
// query that uses what is exported.
func TestExportProblemsCanFail(t *testing.T) {
	exported := map[string][]string{"egress_denied_packets_total": {"action", "user"}}
	for _, bad := range []string{
		`rate(egress_denied_packet_total[5m])`,
		`egress_denied_packets_total{service="ssh"}`,
		`sum by (service) (egress_denied_packets_total)`,
	} {
		if p := exportProblems([]query{{"case", bad}}, nil, exported); len(p) != 1 {
			t.Errorf("%q: problems %q, want one", bad, p)
		}
	}
	good := `sum by (instance, user) (rate(egress_denied_packets_total{action="drop"}[5m])) and up{job="x"} == 1`
	if p := exportProblems([]query{{"good", good}}, nil, exported); len(p) != 0 {
		t.Errorf("%q: %q", good, p)
	}
}
