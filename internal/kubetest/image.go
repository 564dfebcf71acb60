package kubetest

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// WriteImage writes a container image FROM scratch as a `docker save`
// tarball at dst: one layer holding files (the path in the image to the file
// on this host, mode kept), tagged ref, whose entrypoint is entrypoint. A
// KubeletNode's ImportImage takes it; so does `docker load`.
func WriteImage(dst, ref string, files map[string]string, entrypoint []string) error {
	layer, diffID, err := layerTar(files)
	if err != nil {
		return err
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entrypoint, "Env": []string{"PATH=/"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": []string{ref},
		"Layers":   []string{diffID + "/layer.tar"},
	}})
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{
		{configName, config},
		{diffID + "/layer.tar", layer},
		{"manifest.json", manifest},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			_ = f.Close()
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			_ = f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// layerTar is an uncompressed layer holding files, and its digest.
func layerTar(files map[string]string) ([]byte, string, error) {
	var buf strings.Builder
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	for _, name := range names {
		clean := strings.TrimPrefix(path.Clean("/"+name), "/")
		for d := path.Dir(clean); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
				return nil, "", err
			}
		}
		src, err := os.Open(files[name])
		if err != nil {
			return nil, "", err
		}
		fi, err := src.Stat()
		if err != nil {
			_ = src.Close()
			return nil, "", err
		}
		if err := tw.WriteHeader(&tar.Header{Name: clean, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			_ = src.Close()
			return nil, "", err
		}
		_, err = io.Copy(tw, src)
		_ = src.Close()
		if err != nil {
			return nil, "", fmt.Errorf("image layer: %s: %w", files[name], err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	b := []byte(buf.String())
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:]), nil
}
