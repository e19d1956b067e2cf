package inventory_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rbee.dev/hive/internal/inventory"
	"rbee.dev/shared/api"
)

const mib = 1 << 20

// readTestdata returns a recorded file from testdata/.
func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestParseGPUs(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  []api.GPU
		check func(t *testing.T, gpus []api.GPU) // for outputs too long to spell out
	}{
		{
			name:  "one RTX 4090",
			input: readTestdata(t, "gpus-rtx4090.csv"),
			want: []api.GPU{{
				Index: 0, UUID: "GPU-3f9a6c1e-7b2d-4e85-a1c4-9d0e5b7f2a63", Name: "NVIDIA GeForce RTX 4090",
				MemTotalBytes: 24564 * mib, MemUsedBytes: 18932 * mib, MemFreeBytes: 5255 * mib,
				UtilPercent: 97, TemperatureC: 71, PowerWatts: 412.37,
			}},
		},
		{
			name:  "eight A100",
			input: readTestdata(t, "gpus-8x-a100.csv"),
			check: func(t *testing.T, gpus []api.GPU) {
				if len(gpus) != 8 {
					t.Fatalf("got %d GPUs, want 8", len(gpus))
				}
				uuids := map[string]bool{}
				for i, g := range gpus {
					if g.Index != i || g.Name != "NVIDIA A100-SXM4-80GB" || g.MemTotalBytes != 81920*mib {
						t.Errorf("gpu %d = %+v", i, g)
					}
					if g.MemUsedBytes+g.MemFreeBytes > g.MemTotalBytes {
						t.Errorf("gpu %d: used+free exceeds total", i)
					}
					uuids[g.UUID] = true
				}
				if len(uuids) != 8 {
					t.Errorf("got %d distinct UUIDs, want 8", len(uuids))
				}
				want := api.GPU{
					Index: 3, UUID: "GPU-5d3c2b1a-9f8e-4d7c-b6a5-e4f3d2c1b0a9", Name: "NVIDIA A100-SXM4-80GB",
					MemTotalBytes: 81920 * mib, MemUsedBytes: 4 * mib, MemFreeBytes: 81555 * mib,
					UtilPercent: 0, TemperatureC: 33, PowerWatts: 61.23,
				}
				if gpus[3] != want {
					t.Errorf("gpu 3 = %+v, want %+v", gpus[3], want)
				}
			},
		},
		{
			name:  "A100 with MIG reports N/A utilisation",
			input: readTestdata(t, "gpus-a100-mig.csv"),
			want: []api.GPU{{
				Index: 0, UUID: "GPU-e1d2c3b4-a596-4788-b9a0-c1d2e3f4a5b6", Name: "NVIDIA A100-SXM4-40GB",
				MemTotalBytes: 40960 * mib, MemUsedBytes: 19870 * mib, MemFreeBytes: 20480 * mib,
				UtilPercent: 0, TemperatureC: 38, PowerWatts: 118.42,
			}},
		},
		{
			name:  "laptop GPU without power reading",
			input: readTestdata(t, "gpus-gtx1650-not-supported.csv"),
			want: []api.GPU{{
				Index: 0, UUID: "GPU-6b5a4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d", Name: "NVIDIA GeForce GTX 1650 with Max-Q Design",
				MemTotalBytes: 4096 * mib, MemUsedBytes: 512 * mib, MemFreeBytes: 3424 * mib,
				UtilPercent: 6, TemperatureC: 48, PowerWatts: 0,
			}},
		},
		{
			name:  "empty output is no GPUs",
			input: nil,
			want:  nil,
		},
		{
			name:  "CRLF, blank lines and odd spacing",
			input: []byte("\r\n 1 ,GPU-x,  Tesla T4 , 15360,0 ,14930, [Unknown Error] ,N/A, 27.1 \r\n\r\n"),
			want: []api.GPU{{
				Index: 1, UUID: "GPU-x", Name: "Tesla T4",
				MemTotalBytes: 15360 * mib, MemUsedBytes: 0, MemFreeBytes: 14930 * mib,
				PowerWatts: 27.1,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gpus, err := inventory.ParseGPUs(tt.input)
			if err != nil {
				t.Fatalf("ParseGPUs: %v", err)
			}
			if tt.check != nil {
				tt.check(t, gpus)
				return
			}
			if len(gpus) != len(tt.want) {
				t.Fatalf("got %d GPUs %+v, want %d", len(gpus), gpus, len(tt.want))
			}
			for i := range gpus {
				if gpus[i] != tt.want[i] {
					t.Errorf("gpu %d = %+v\nwant %+v", i, gpus[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseGPUsErrors(t *testing.T) {
	tests := []struct {
		name    string
		input   []byte
		wantErr []string // substrings the error must carry to be of use
	}{
		{
			name:    "driver error text",
			input:   readTestdata(t, "smi-driver-error.txt"),
			wantErr: []string{"line 1", "want 9 fields", "couldn't communicate with the NVIDIA driver"},
		},
		{
			name:    "no devices text",
			input:   readTestdata(t, "smi-no-devices.txt"),
			wantErr: []string{"No devices were found"},
		},
		{
			name:    "header line left in",
			input:   []byte("index, uuid, name, memory.total [MiB], memory.used [MiB], memory.free [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]\n"),
			wantErr: []string{"line 1", "index"},
		},
		{
			name:    "units left in",
			input:   []byte("0, GPU-x, Tesla T4, 15360 MiB, 0 MiB, 14930 MiB, 0 %, 30, 27.1 W\n"),
			wantErr: []string{"memory.total", "15360 MiB"},
		},
		{
			name:    "index not available",
			input:   []byte("[N/A], GPU-x, Tesla T4, 15360, 0, 14930, 0, 30, 27.1\n"),
			wantErr: []string{"index"},
		},
		{
			name:    "bad second line",
			input:   []byte("0, GPU-x, Tesla T4, 15360, 0, 14930, 0, 30, 27.1\n1, GPU-y, Tesla T4\n"),
			wantErr: []string{"line 2", "got 3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gpus, err := inventory.ParseGPUs(tt.input)
			if err == nil {
				t.Fatalf("ParseGPUs = %+v, want an error", gpus)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  api.Memory
	}{
		{"recorded", readTestdata(t, "proc-meminfo.txt"), api.Memory{TotalBytes: 24684084 * 1024, FreeBytes: 24315808 * 1024}},
		{"kernel without MemAvailable", readTestdata(t, "proc-meminfo-no-available.txt"), api.Memory{TotalBytes: 8167848 * 1024, FreeBytes: (512340 + 204800 + 3145728) * 1024}},
		{"empty", nil, api.Memory{}},
		{"garbage", []byte("MemTotal: lots\nnonsense\n"), api.Memory{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inventory.ParseMeminfo(tt.input); got != tt.want {
				t.Errorf("ParseMeminfo = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseLoadavg(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  float64
	}{
		{"recorded", readTestdata(t, "proc-loadavg.txt"), 3.18},
		{"empty", nil, 0},
		{"garbage", []byte("x y z\n"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inventory.ParseLoadavg(tt.input); got != tt.want {
				t.Errorf("ParseLoadavg = %v, want %v", got, tt.want)
			}
		})
	}
}
