package inventory

import (
	"fmt"
	"strconv"
	"strings"

	"rbee.dev/shared/api"
)

// gpuQueryFields are the columns ParseGPUs expects, in order. The query
// string sent to nvidia-smi is built from the same list so the two cannot
// drift apart.
var gpuQueryFields = []string{
	"index", "uuid", "name",
	"memory.total", "memory.used", "memory.free",
	"utilization.gpu", "temperature.gpu", "power.draw",
}

// csvFormat asks for bare values: no header line and no units, so memory
// comes as plain MiB and power as plain watts.
const csvFormat = "--format=csv,noheader,nounits"

// gpuQueryArgs are the nvidia-smi arguments whose output ParseGPUs reads.
var gpuQueryArgs = []string{"--query-gpu=" + strings.Join(gpuQueryFields, ","), csvFormat}

// mib is nvidia-smi's memory unit under nounits.
const mib = 1 << 20

// ParseGPUs reads the output of nvidia-smi --query-gpu with the columns of
// gpuQueryFields in csv,noheader,nounits format, one GPU per line.
// Fields nvidia-smi cannot report ("[N/A]", "[Not Supported]", as MIG GPUs
// do for utilisation) become zero. Empty output means no GPUs. Anything
// else that does not fit, such as a driver error message, is an error.
func ParseGPUs(csv []byte) ([]api.GPU, error) {
	var gpus []api.GPU
	for n, line := range csvLines(csv) {
		r := row{num: n, names: gpuQueryFields}
		if err := r.split(line, strings.Split(line, ",")); err != nil {
			return nil, err
		}
		g := api.GPU{
			Index:         r.int(0),
			UUID:          r.str(1),
			Name:          r.str(2),
			MemTotalBytes: r.mib(3),
			MemUsedBytes:  r.mib(4),
			MemFreeBytes:  r.mib(5),
			UtilPercent:   r.float(6),
			TemperatureC:  r.float(7),
			PowerWatts:    r.float(8),
		}
		if r.err != nil {
			return nil, r.err
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// csvLines yields the non-blank lines of out with their 1-based numbers,
// so errors can point at the line at fault.
func csvLines(out []byte) func(yield func(int, string) bool) {
	return func(yield func(int, string) bool) {
		n := 0
		for line := range strings.Lines(string(out)) {
			n++
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if !yield(n, line) {
				return
			}
		}
	}
}

// row parses the fields of one CSV line, keeping the first error so the
// parsers can read every field and check once.
type row struct {
	num    int
	names  []string
	fields []string
	err    error
}

// split takes the fields of line, as cut by the caller, trims them and
// checks their count.
func (r *row) split(line string, raw []string) error {
	r.fields = trimAll(raw)
	if len(r.fields) != len(r.names) {
		return fmt.Errorf("nvidia-smi line %d: want %d fields (%s), got %d: %q",
			r.num, len(r.names), strings.Join(r.names, ","), len(r.fields), oneLine(line, maxOutputInError))
	}
	return nil
}

func (r *row) fail(i int, err error) {
	if r.err == nil {
		r.err = fmt.Errorf("nvidia-smi line %d: %s %q: %w", r.num, r.names[i], r.fields[i], err)
	}
}

// str returns field i, or "" where nvidia-smi could not report it.
func (r *row) str(i int) string {
	if unavailable(r.fields[i]) {
		return ""
	}
	return r.fields[i]
}

// int returns field i as an int. It is used for GPU indices and PIDs,
// which identify things, so an unavailable value is an error.
func (r *row) int(i int) int {
	v, err := strconv.Atoi(r.fields[i])
	if err != nil {
		r.fail(i, err)
	}
	return v
}

// mib returns field i, a count of MiB, in bytes.
func (r *row) mib(i int) uint64 {
	if unavailable(r.fields[i]) {
		return 0
	}
	v, err := strconv.ParseUint(r.fields[i], 10, 64)
	if err != nil {
		r.fail(i, err)
	}
	return v * mib
}

// float returns field i as a number, or 0 where it is unavailable.
func (r *row) float(i int) float64 {
	if unavailable(r.fields[i]) {
		return 0
	}
	v, err := strconv.ParseFloat(r.fields[i], 64)
	if err != nil {
		r.fail(i, err)
	}
	return v
}

// unavailable tells the placeholders nvidia-smi prints instead of a value:
// "[N/A]", "[Not Supported]", "[Unknown Error]", "[Insufficient
// Permissions]" and the like, all bracketed, and a bare "N/A" in some
// older drivers.
func unavailable(s string) bool {
	return s == "" || s == "N/A" || (strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"))
}

func trimAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.TrimSpace(s)
	}
	return out
}
