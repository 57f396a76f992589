package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// makeVolumes writes every volume of pod into a directory of its own under dir, as the kubelet
// would have it before starting the containers, and returns name -> directory.
func makeVolumes(ctx context.Context, api kubernetes.Interface, dir string, pod *corev1.Pod, opts Options) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		vdir := filepath.Join(dir, v.Name)
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			return nil, err
		}
		var err error
		switch src := v.VolumeSource; {
		case src.EmptyDir != nil:
			err = os.Chmod(vdir, 0o777) // the kubelet's emptyDir: writable by any container user
		case src.ConfigMap != nil:
			err = writeConfigMap(ctx, api, vdir, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, mode(src.ConfigMap.DefaultMode, corev1.ConfigMapVolumeSourceDefaultMode))
		case src.Secret != nil:
			err = writeSecret(ctx, api, vdir, pod.Namespace, src.Secret.SecretName, src.Secret.Items, src.Secret.Optional, mode(src.Secret.DefaultMode, corev1.SecretVolumeSourceDefaultMode))
		case src.DownwardAPI != nil:
			err = writeDownwardAPI(vdir, pod, src.DownwardAPI.Items, mode(src.DownwardAPI.DefaultMode, corev1.DownwardAPIVolumeSourceDefaultMode), opts)
		case src.Projected != nil:
			err = writeProjected(ctx, api, vdir, pod, src.Projected, opts)
		default:
			err = fmt.Errorf("kubelet: volume %q: only emptyDir, configMap, secret, downwardAPI and projected volumes are supported here", v.Name)
		}
		if err != nil {
			return nil, err
		}
		out[v.Name] = vdir
	}
	return out, nil
}

func mode(m *int32, def int32) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return os.FileMode(def)
}

// waitFor polls get until it finds the object (the kubelet waits for a missing ConfigMap the
// same way; istiod publishes istio-ca-root-cert a moment after it starts). A missing optional
// object gives found=false at once.
func waitFor[T any](ctx context.Context, optional *bool, get func() (T, error)) (obj T, found bool, err error) {
	var last error
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		obj, last = get()
		switch {
		case last == nil:
			found = true
			return true, nil
		case !apierrors.IsNotFound(last):
			return false, last
		}
		return optional != nil && *optional, nil
	})
	if err != nil && err != last {
		err = fmt.Errorf("kubelet: %w (last: %v)", err, last)
	}
	return obj, found, err
}

func writeConfigMap(ctx context.Context, api kubernetes.Interface, dir, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) error {
	cm, found, err := waitFor(ctx, optional, func() (*corev1.ConfigMap, error) {
		return api.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil || !found {
		return err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return writeKeys(dir, data, items, def)
}

func writeSecret(ctx context.Context, api kubernetes.Interface, dir, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) error {
	s, found, err := waitFor(ctx, optional, func() (*corev1.Secret, error) {
		return api.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil || !found {
		return err
	}
	return writeKeys(dir, s.Data, items, def)
}

// writeKeys writes every key, or only items (key -> path, with their own mode) when given.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, def os.FileMode) error {
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("kubelet: key %q not found", it.Key)
		}
		if err := writeFile(dir, it.Path, v, mode(it.Mode, int32(def))); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dir, rel string, data []byte, m os.FileMode) error {
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, m); err != nil {
		return err
	}
	return os.Chmod(p, m) // WriteFile's mode is filtered by the umask
}

func writeDownwardAPI(dir string, pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def os.FileMode, opts Options) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, it.FieldRef.FieldPath, opts)
		case it.ResourceFieldRef != nil:
			v, err = resourceValue(pod, it.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		if err := writeFile(dir, it.Path, []byte(v), mode(it.Mode, int32(def))); err != nil {
			return err
		}
	}
	return nil
}

func writeProjected(ctx context.Context, api kubernetes.Interface, dir string, pod *corev1.Pod, p *corev1.ProjectedVolumeSource, opts Options) error {
	def := mode(p.DefaultMode, corev1.ProjectedVolumeSourceDefaultMode)
	for _, s := range p.Sources {
		var err error
		switch {
		case s.ServiceAccountToken != nil:
			err = writeToken(ctx, api, dir, pod, s.ServiceAccountToken, def)
		case s.ConfigMap != nil:
			err = writeConfigMap(ctx, api, dir, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, def)
		case s.Secret != nil:
			err = writeSecret(ctx, api, dir, pod.Namespace, s.Secret.Name, s.Secret.Items, s.Secret.Optional, def)
		case s.DownwardAPI != nil:
			err = writeDownwardAPI(dir, pod, s.DownwardAPI.Items, def, opts)
		default:
			err = fmt.Errorf("kubelet: unsupported projected volume source in pod %s", pod.Name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeToken asks the TokenRequest API for the pod's service account token with the
// projection's audience and lifetime, bound to the pod when the API server has it.
func writeToken(ctx context.Context, api kubernetes.Interface, dir string, pod *corev1.Pod, t *corev1.ServiceAccountTokenProjection, m os.FileMode) error {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: t.ExpirationSeconds}}
	if t.Audience != "" {
		req.Spec.Audiences = []string{t.Audience}
	}
	if pod.UID != "" {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := api.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kubelet: token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	return writeFile(dir, t.Path, []byte(tr.Status.Token), m)
}

// formatMap is how the kubelet writes labels and annotations into a downward API file.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return strings.TrimSuffix(b.String(), "\n")
}
