package main

// "k8s hostpath-provisioner": a minimal dynamic volume provisioner for the
// single-node e2e cluster.
//
// kube-controller-manager's built-in host-path provisioner creates volume
// directories with mode 0750 owned by root, so pods running as non-root
// cannot write to them. This provisioner instead creates world-writable
// (01777, like /tmp) directories under --root, which makes PVCs usable by any
// UID, and deletes them again when a PV with reclaim policy Delete is released.
//
// It polls the API (every --interval) instead of using informers: the cluster
// is tiny and polling keeps the code obvious. It acts on PVCs that the PV
// controller has handed to an external provisioner named --name (annotation
// volume.kubernetes.io/storage-provisioner), honouring WaitForFirstConsumer
// (annotation volume.kubernetes.io/selected-node).

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	annStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
	annSelectedNode           = "volume.kubernetes.io/selected-node"
	annProvisionedBy          = "pv.kubernetes.io/provisioned-by"
)

func provisionerMain(args []string) int {
	fs := flag.NewFlagSet("hostpath-provisioner", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file")
	name := fs.String("name", "tradestore.local/hostpath", "provisioner name (StorageClass .provisioner)")
	root := fs.String("root", "/var/lib/tradestore-e2e/volumes", "directory holding the volumes")
	interval := fs.Duration("interval", time.Second, "poll interval")
	_ = fs.Parse(args)

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hostpath-provisioner: %v\n", err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hostpath-provisioner: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "hostpath-provisioner: %v\n", err)
		return 1
	}
	p := &hostPathProvisioner{cs: cs, name: *name, root: *root}
	logf("started: name=%s root=%s", *name, *root)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := p.sync(ctx); err != nil {
			logf("sync: %v", err)
		}
		cancel()
		time.Sleep(*interval)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s hostpath-provisioner: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, a...))
}

type hostPathProvisioner struct {
	cs   kubernetes.Interface
	name string
	root string
}

func (p *hostPathProvisioner) sync(ctx context.Context) error {
	pvcs, err := p.cs.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range pvcs.Items {
		pvc := &pvcs.Items[i]
		if err := p.maybeProvision(ctx, pvc); err != nil {
			logf("provision %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	pvs, err := p.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range pvs.Items {
		pv := &pvs.Items[i]
		if err := p.maybeDelete(ctx, pv); err != nil {
			logf("delete %s: %v", pv.Name, err)
		}
	}
	return nil
}

func (p *hostPathProvisioner) maybeProvision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || pvc.DeletionTimestamp != nil {
		return nil
	}
	ann := pvc.Annotations
	if ann[annStorageProvisioner] != p.name && ann[annBetaStorageProvisioner] != p.name {
		return nil
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName == "" {
		return nil
	}
	sc, err := p.cs.StorageV1().StorageClasses().Get(ctx, *pvc.Spec.StorageClassName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer && ann[annSelectedNode] == "" {
		return nil // the scheduler has not picked a node yet
	}
	pvName := "pvc-" + string(pvc.UID)
	if _, err := p.cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{}); err == nil {
		return nil // already created, the PV controller will bind it
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	dir := filepath.Join(p.root, pvName)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		return err
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	capacity, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return fmt.Errorf("no storage request")
	}
	hostPathType := corev1.HostPathDirectory
	volumeMode := corev1.PersistentVolumeFilesystem
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        pvName,
			Annotations: map[string]string{annProvisionedBy: p.name},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: capacity},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc.Name,
			VolumeMode:                    &volumeMode,
			MountOptions:                  sc.MountOptions,
			ClaimRef: &corev1.ObjectReference{
				Kind:            "PersistentVolumeClaim",
				APIVersion:      "v1",
				Namespace:       pvc.Namespace,
				Name:            pvc.Name,
				UID:             pvc.UID,
				ResourceVersion: pvc.ResourceVersion,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
		},
	}
	if _, err := p.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	logf("provisioned %s for %s/%s at %s", pvName, pvc.Namespace, pvc.Name, dir)
	return nil
}

func (p *hostPathProvisioner) maybeDelete(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Annotations[annProvisionedBy] != p.name || pv.DeletionTimestamp != nil {
		return nil
	}
	if pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed {
		return nil
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return nil
	}
	if hp := pv.Spec.HostPath; hp != nil {
		// Only ever remove directories this provisioner created.
		if filepath.Dir(hp.Path) == filepath.Clean(p.root) && strings.HasPrefix(filepath.Base(hp.Path), "pvc-") {
			if err := os.RemoveAll(hp.Path); err != nil {
				return err
			}
		}
	}
	err := p.cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	logf("deleted %s", pv.Name)
	return nil
}
