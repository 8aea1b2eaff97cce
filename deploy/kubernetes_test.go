package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/prefork/prefork/pkg/supervisor"
)

// The names the manifests agree on.
const (
	preforkBinary   = "/usr/local/bin/prefork"
	configMapKey    = "prefork.yaml"
	metricsPortName = "metrics"
	scrapeJob       = "prefork" // the job PreforkDown in rules.yml watches
)

// manifests is every object of deploy/kubernetes, by kind.
type manifests struct {
	configMaps  []corev1.ConfigMap
	deployments []appsv1.Deployment
	services    []corev1.Service
	pdbs        []policyv1.PodDisruptionBudget
	podMonitors []monitoringv1.PodMonitor
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadManifests decodes every YAML document of every .yaml file in dir.
func loadManifests(dir string) (manifests, error) {
	var m manifests
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return m, err
	}
	if len(files) == 0 {
		return m, fmt.Errorf("no manifest in %s", dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return m, err
		}
		for i, doc := range docSeparator.Split(string(data), -1) {
			if err := m.add([]byte(doc)); err != nil {
				return m, fmt.Errorf("%s, document %d: %w", filepath.Base(f), i+1, err)
			}
		}
	}
	return m, nil
}

// add decodes one document strictly into the type its apiVersion and kind
// name: an unknown field, a duplicate key or an unknown kind is an error,
// as kubectl apply --validate=strict makes it.
func (m *manifests) add(doc []byte) error {
	if isBlankYAML(doc) {
		return nil
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		err = decodeInto(doc, &m.configMaps)
	case "v1 Service":
		err = decodeInto(doc, &m.services)
	case "apps/v1 Deployment":
		err = decodeInto(doc, &m.deployments)
	case "policy/v1 PodDisruptionBudget":
		err = decodeInto(doc, &m.pdbs)
	case "monitoring.coreos.com/v1 PodMonitor":
		err = decodeInto(doc, &m.podMonitors)
	default:
		return fmt.Errorf("unknown apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	return err
}

func decodeInto[T any](doc []byte, list *[]T) error {
	var obj T
	if err := yaml.UnmarshalStrict(doc, &obj); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}

// isBlankYAML tells a document of only comments and blank lines, such as
// the text before a file's first "---".
func isBlankYAML(doc []byte) bool {
	for line := range bytes.Lines(doc) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	m, err := loadManifests("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range m.check() {
		t.Error(err)
	}
}

// check returns everything that would make the manifests misbehave
// together; the API server would accept each object alone.
func (m manifests) check() []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(m.configMaps) != 1 || len(m.deployments) != 1 || len(m.services) != 1 ||
		len(m.pdbs) != 1 || len(m.podMonitors) != 1 {
		fail("want one ConfigMap, Deployment, Service, PodDisruptionBudget and PodMonitor, have %d, %d, %d, %d, %d",
			len(m.configMaps), len(m.deployments), len(m.services), len(m.pdbs), len(m.podMonitors))
		return errs
	}
	cm, dep := m.configMaps[0], m.deployments[0]
	cfg, err := preforkConfig(cm)
	if err != nil {
		fail("ConfigMap %s: %v", cm.Name, err)
		return errs
	}
	if cfg.Sockets != supervisor.SocketsMaster {
		fail("config: sockets is %q; a pod cannot set tcp_migrate_req, so only master mode reloads without drops", cfg.Sockets)
	}
	pod := dep.Spec.Template
	ctr, err := preforkContainer(pod.Spec)
	if err != nil {
		fail("Deployment %s: %v", dep.Name, err)
		return errs
	}
	metricsPort, err := addrPort(cfg.Metrics)
	if err != nil {
		fail("config: metrics: %v", err)
	}
	listenPort, err := addrPort(cfg.Listen[0].Addr)
	if err != nil {
		fail("config: listen: %v", err)
	}
	if p, ok := namedPort(ctr, metricsPortName); !ok || p != metricsPort {
		fail("container port %q is %d, config metrics port is %d", metricsPortName, p, metricsPort)
	}
	if p, ok := namedPort(ctr, "http"); !ok || p != listenPort {
		fail("container port \"http\" is %d, config listen port is %d", p, listenPort)
	}
	errs = append(errs, checkArgs(ctr, pod.Spec, cm)...)
	errs = append(errs, checkProbes(ctr, metricsPort)...)
	errs = append(errs, checkShutdown(pod.Spec, ctr, cfg.DrainTimeout)...)
	errs = append(errs, checkSecurity(pod.Spec, ctr)...)
	if r := ctr.Resources; r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		fail("container resources: want cpu and memory requests and a memory limit, have %v", r)
	}
	if a := pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(metricsPort)) {
		fail("pod annotations prometheus.io/scrape=%q port=%q, want \"true\" and %d", a["prometheus.io/scrape"], a["prometheus.io/port"], metricsPort)
	}
	podLabels := labels.Set(pod.Labels)
	for what, sel := range map[string]*metav1.LabelSelector{
		"Deployment selector":          dep.Spec.Selector,
		"PodDisruptionBudget selector": m.pdbs[0].Spec.Selector,
		"PodMonitor selector":          &m.podMonitors[0].Spec.Selector,
		"Service selector":             {MatchLabels: m.services[0].Spec.Selector},
	} {
		if !selects(sel, podLabels) {
			fail("%s %v does not select the pod labels %v", what, sel, pod.Labels)
		}
	}
	for _, sp := range m.services[0].Spec.Ports {
		if _, ok := resolvePort(ctr, sp.TargetPort); !ok {
			fail("Service port %q targets %v, no port of the container", sp.Name, sp.TargetPort.String())
		}
	}
	errs = append(errs, checkPodMonitor(m.podMonitors[0], ctr, metricsPort)...)
	return errs
}

// preforkConfig reads the ConfigMap's prefork.yaml with the master's own
// parser, so an unknown key fails here as it would fail the master.
func preforkConfig(cm corev1.ConfigMap) (supervisor.Config, error) {
	cfg := supervisor.DefaultConfig()
	data, ok := cm.Data[configMapKey]
	if !ok {
		return cfg, fmt.Errorf("no key %s", configMapKey)
	}
	err := supervisor.ParseConfigFile([]byte(data), &cfg)
	return cfg, err
}

func preforkContainer(spec corev1.PodSpec) (corev1.Container, error) {
	for _, c := range spec.Containers {
		if len(c.Command) > 0 && c.Command[0] == preforkBinary {
			return c, nil
		}
	}
	return corev1.Container{}, fmt.Errorf("no container runs %s as its entrypoint", preforkBinary)
}

// checkArgs ties the flags of `prefork run` to the volumes behind them.
func checkArgs(ctr corev1.Container, spec corev1.PodSpec, cm corev1.ConfigMap) []error {
	var errs []error
	if len(ctr.Args) == 0 || ctr.Args[0] != "run" {
		return []error{fmt.Errorf("container args %q: want \"run\" first", ctr.Args)}
	}
	configPath := flagValue(ctr.Args, "--config")
	if vol, dir := mountedVolume(ctr, spec, filepath.Dir(configPath)); vol == nil || vol.ConfigMap == nil ||
		vol.ConfigMap.Name != cm.Name || filepath.Base(configPath) != configMapKey {
		errs = append(errs, fmt.Errorf("--config %q is not the key %s of ConfigMap %s mounted as a directory (mount %q)",
			configPath, configMapKey, cm.Name, dir))
	}
	control := flagValue(ctr.Args, "--control")
	if vol, _ := mountedVolume(ctr, spec, filepath.Dir(control)); vol == nil || vol.EmptyDir == nil {
		errs = append(errs, fmt.Errorf("--control %q is not on an emptyDir (the root file system is read-only)", control))
	}
	for _, e := range ctr.Env {
		if e.Name == "PREFORK_CONTROL" && e.Value != control {
			errs = append(errs, fmt.Errorf("PREFORK_CONTROL %q differs from --control %q: prefork status would miss the master", e.Value, control))
		}
	}
	return errs
}

func flagValue(args []string, name string) string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// mountedVolume returns the volume mounted, without subPath, exactly at dir.
func mountedVolume(ctr corev1.Container, spec corev1.PodSpec, dir string) (*corev1.Volume, string) {
	for _, vm := range ctr.VolumeMounts {
		if vm.MountPath != dir || vm.SubPath != "" {
			continue
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == vm.Name {
				return &spec.Volumes[i], vm.MountPath
			}
		}
	}
	return nil, ""
}

func checkProbes(ctr corev1.Container, metricsPort int32) []error {
	var errs []error
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", ctr.ReadinessProbe, "/readyz"},
		{"livenessProbe", ctr.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			errs = append(errs, fmt.Errorf("%s: want an httpGet of %s", p.name, p.path))
			continue
		}
		get := p.probe.HTTPGet
		port, ok := resolvePort(ctr, get.Port)
		if get.Path != p.path || !ok || port != metricsPort {
			errs = append(errs, fmt.Errorf("%s gets %s on port %s, want %s on the metrics port %d",
				p.name, get.Path, get.Port.String(), p.path, metricsPort))
		}
	}
	return errs
}

// checkShutdown: the kubelet's grace period runs from the start of
// preStop, so it must outlast the preStop sleep and the drain together, or
// the kubelet SIGKILLs children that are still finishing requests.
func checkShutdown(spec corev1.PodSpec, ctr corev1.Container, drain time.Duration) []error {
	if ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil || ctr.Lifecycle.PreStop.Sleep == nil {
		return []error{errors.New("no preStop sleep: SIGTERM would race the endpoint removal")}
	}
	if spec.TerminationGracePeriodSeconds == nil {
		return []error{errors.New("no terminationGracePeriodSeconds (the default 30s is not tied to the drain timeout)")}
	}
	sleep := time.Duration(ctr.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if grace <= sleep+drain {
		return []error{fmt.Errorf("terminationGracePeriodSeconds %v is not above preStop sleep %v + drain-timeout %v", grace, sleep, drain)}
	}
	return nil
}

func checkSecurity(spec corev1.PodSpec, ctr corev1.Container) []error {
	var errs []error
	sc := ctr.SecurityContext
	if sc == nil {
		return []error{errors.New("container has no securityContext")}
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && spec.SecurityContext != nil {
		nonRoot = spec.SecurityContext.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		errs = append(errs, errors.New("runAsNonRoot is not true"))
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errs = append(errs, errors.New("readOnlyRootFilesystem is not true"))
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = append(errs, errors.New("allowPrivilegeEscalation is not false"))
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		errs = append(errs, errors.New("capabilities: want drop [ALL] and nothing added (master mode binds the port, above 1024)"))
	}
	return errs
}

func checkPodMonitor(pm monitoringv1.PodMonitor, ctr corev1.Container, metricsPort int32) []error {
	var errs []error
	if len(pm.Spec.PodMetricsEndpoints) == 0 {
		return []error{errors.New("PodMonitor has no endpoint")}
	}
	for _, ep := range pm.Spec.PodMetricsEndpoints {
		if ep.Port == nil {
			errs = append(errs, errors.New("PodMonitor endpoint has no port name"))
		} else if p, ok := namedPort(ctr, *ep.Port); !ok || p != metricsPort {
			errs = append(errs, fmt.Errorf("PodMonitor port %q is not the metrics port %d", *ep.Port, metricsPort))
		}
		if ep.Path != "" && ep.Path != "/metrics" {
			errs = append(errs, fmt.Errorf("PodMonitor path %q, want /metrics", ep.Path))
		}
		job := ""
		for _, r := range ep.RelabelConfigs {
			if r.TargetLabel == "job" && r.Replacement != nil {
				job = *r.Replacement
			}
		}
		if job != scrapeJob {
			errs = append(errs, fmt.Errorf("PodMonitor sets job %q, the alerts expect %q", job, scrapeJob))
		}
	}
	return errs
}

func namedPort(ctr corev1.Container, name string) (int32, bool) {
	for _, p := range ctr.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// resolvePort turns a port by name or number into a port of the container.
func resolvePort(ctr corev1.Container, port intstr.IntOrString) (int32, bool) {
	if port.Type == intstr.String {
		return namedPort(ctr, port.StrVal)
	}
	for _, p := range ctr.Ports {
		if p.ContainerPort == port.IntVal {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func selects(sel *metav1.LabelSelector, set labels.Set) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(set)
}

func addrPort(addr string) (int32, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return int32(p), err
}

// The decoder refuses what kubectl apply --validate=strict refuses, so a
// misspelt field cannot pass TestKubernetesManifests unnoticed.
func TestManifestDecodingIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		doc     string
		wantErr string
	}{
		{name: "misspelt field", wantErr: "unknown field",
			doc: "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      terminationGracePeriodSecond: 40\n"},
		{name: "duplicate key", wantErr: "already set",
			doc: "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\ndata: {c: d}\n"},
		{name: "unknown kind", wantErr: "unknown apiVersion",
			doc: "apiVersion: v1\nkind: Pod\n"},
		{name: "kind of another version", wantErr: "unknown apiVersion",
			doc: "apiVersion: monitoring.coreos.com/v1alpha1\nkind: PodMonitor\n"},
		{name: "comments only", doc: "# nothing\n\n"},
		{name: "known", doc: "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m manifests
			err := m.add([]byte(tc.doc))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// Each invariant of check fails on a manifest set broken in its way.
func TestKubernetesCheckFails(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(m *manifests)
		wantErr string
	}{
		{"grace below preStop plus drain", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64(30))
		}, "terminationGracePeriodSeconds"},
		{"child socket mode", func(m *manifests) {
			cm := m.configMaps[0].Data
			cm[configMapKey] = strings.Replace(cm[configMapKey], "sockets: master", "sockets: child", 1)
		}, "sockets is \"child\""},
		{"unknown config key", func(m *manifests) {
			m.configMaps[0].Data[configMapKey] = "drain-timout: 25s\n"
		}, "drain-timout"},
		{"readiness on the server's port", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		}, "readinessProbe"},
		{"liveness on readyz", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.Containers[0].LivenessProbe.HTTPGet.Path = "/readyz"
		}, "livenessProbe"},
		{"writable root", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = new(false)
		}, "readOnlyRootFilesystem"},
		{"config by subPath", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.Containers[0].VolumeMounts[0].SubPath = configMapKey
		}, "--config"},
		{"service selects nothing", func(m *manifests) {
			m.services[0].Spec.Selector = map[string]string{"app": "other"}
		}, "Service selector"},
		{"podmonitor job", func(m *manifests) {
			m.podMonitors[0].Spec.PodMetricsEndpoints[0].RelabelConfigs = nil
		}, "sets job"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := loadManifests("kubernetes")
			if err != nil {
				t.Fatal(err)
			}
			tc.breakIt(&m)
			errs := m.check()
			re := regexp.MustCompile(tc.wantErr)
			if !slices.ContainsFunc(errs, func(err error) bool { return re.MatchString(err.Error()) }) {
				t.Fatalf("errors %v, want one matching %q", errs, tc.wantErr)
			}
		})
	}
}
