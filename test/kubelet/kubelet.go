package kubelet

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// Image is what the runner knows of a container image: no image can be pulled or run here, so
// a test says which local files stand for it.
type Image struct {
	// Entrypoint is used when the container has no command.
	Entrypoint []string
	// Files maps paths in the image to files on this machine, bind-mounted read-only.
	Files map[string]string
	// Env is the image's own environment (PATH), under the container's.
	Env []string
}

// Options say what the runner cannot know from the Pod.
type Options struct {
	// API reads ConfigMaps and Secrets and issues service account tokens, as the kubelet does.
	API kubernetes.Interface
	// Image resolves a container's image.
	Image func(ref string) (Image, error)
	// Hosts are the /etc/hosts entries, name -> IP (cluster DNS stands in for nothing else).
	Hosts map[string]string
	// Forwards run inside the pod's network namespace (e.g. a Service's address to a Unix
	// socket of a server outside), with Binds making their sockets' directories visible.
	Forwards []Forward
	Binds    []Bind
	// ExtraEnv is appended to what the kubelet would set (e.g. DISABLE_ENVOY=true: no Envoy
	// binary exists here).
	ExtraEnv []string
	// PodIP and HostIP resolve status.podIP and status.hostIP; both default to 127.0.0.1, the
	// only address of the pod's network namespace.
	PodIP, HostIP string
	// Out receives the container's output.
	Out io.Writer
}

// Container is one running container of a Pod.
type Container struct {
	*Process
	// Env is its environment as the kubelet resolved it, Args its expanded arguments.
	Env  map[string]string
	Args []string

	volumes map[string]string
}

// VolumeDir is where the pod volume name lives on this machine (what every container that
// mounts it sees).
func (c *Container) VolumeDir(name string) string { return c.volumes[name] }

// Run starts the container (or init container) name of pod, with the pod's volumes made
// under dir. pod is what the API server stored (for a workload's template, a Pod built from it
// with a name of the kubelet's choosing).
func Run(ctx context.Context, dir string, pod *corev1.Pod, name string, opts Options) (*Container, error) {
	c, err := findContainer(pod, name)
	if err != nil {
		return nil, err
	}
	if opts.PodIP == "" {
		opts.PodIP = "127.0.0.1"
	}
	if opts.HostIP == "" {
		opts.HostIP = "127.0.0.1"
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	img, err := opts.Image(c.Image)
	if err != nil {
		return nil, fmt.Errorf("kubelet: container %s: %w", name, err)
	}
	volumes, err := makeVolumes(ctx, opts.API, filepath.Join(dir, "volumes"), pod, opts)
	if err != nil {
		return nil, err
	}
	env, err := containerEnv(ctx, opts.API, pod, c, img, opts)
	if err != nil {
		return nil, err
	}
	lookup := envMap(env)
	argv := slices.Clone(c.Command)
	if len(argv) == 0 {
		argv = slices.Clone(img.Entrypoint)
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(a, lookup)
	}
	for i, a := range argv {
		argv[i] = expand(a, lookup)
	}
	argv = append(argv, args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("kubelet: container %s has no command and its image no entrypoint", name)
	}

	root := filepath.Join(dir, "root")
	sb := Sandbox{Root: root, Hostname: pod.Name, Argv: argv, Env: env, Dir: c.WorkingDir, Forwards: opts.Forwards}
	sb.UID, sb.GID = runAs(pod, c)
	if err := prepareRoot(root, opts.Hosts); err != nil {
		return nil, err
	}
	binds := []Bind{{Source: "/dev", Target: "/dev"}}
	for target, file := range img.Files {
		binds = append(binds, Bind{Source: file, Target: target, ReadOnly: true})
	}
	for _, m := range c.VolumeMounts {
		src, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("kubelet: container %s mounts volume %q, which the pod does not have", name, m.Name)
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			return nil, fmt.Errorf("kubelet: container %s: subPath mounts are not supported here", name)
		}
		binds = append(binds, Bind{Source: src, Target: path.Clean(m.MountPath), ReadOnly: m.ReadOnly})
	}
	binds = append(binds, opts.Binds...)
	for _, b := range binds {
		if err := mountPoint(root, b); err != nil {
			return nil, err
		}
	}
	sb.Binds = binds
	p, err := Start(sb, opts.Out)
	if err != nil {
		return nil, err
	}
	return &Container{Process: p, Env: lookup, Args: args, volumes: volumes}, nil
}

func findContainer(pod *corev1.Pod, name string) (*corev1.Container, error) {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("kubelet: pod %s/%s has no container %q", pod.Namespace, pod.Name, name)
}

// runAs is the container's user and group: its securityContext, else the pod's, else the
// image's (root, for every image here).
func runAs(pod *corev1.Pod, c *corev1.Container) (uid, gid *uint32) {
	u := func(v *int64) *uint32 {
		if v == nil {
			return nil
		}
		x := uint32(*v)
		return &x
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = u(psc.RunAsUser), u(psc.RunAsGroup)
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = u(sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = u(sc.RunAsGroup)
		}
	}
	return uid, gid
}

// prepareRoot makes the minimal tree a container's root has: /proc, /tmp and /dev to mount
// over, and /etc/hosts with the given entries (files first, as a container image's
// nsswitch.conf says).
func prepareRoot(root string, hosts map[string]string) error {
	for _, d := range []string{"proc", "tmp", "dev", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	var h strings.Builder
	h.WriteString("127.0.0.1 localhost\n")
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&h, "%s %s\n", hosts[n], n)
	}
	for file, content := range map[string]string{
		"etc/hosts":         h.String(),
		"etc/nsswitch.conf": "hosts: files dns\n",
		"etc/resolv.conf":   "",
	} {
		if err := os.WriteFile(filepath.Join(root, file), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mountPoint creates what b mounts over in root: a directory, or an empty file for a file.
func mountPoint(root string, b Bind) error {
	target := filepath.Join(root, b.Target)
	fi, err := os.Stat(b.Source)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	if fi.IsDir() {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// PodFromTemplate is the Pod a workload controller would create from template t in namespace
// ns, named name, before the API server stores it: for running a workload's container
// without a controller.
func PodFromTemplate(ns, name string, t *corev1.PodTemplateSpec) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: *t.ObjectMeta.DeepCopy(), Spec: *t.Spec.DeepCopy()}
	p.Namespace, p.Name = ns, name
	return p
}
