package inventory

// Internals the external tests reach: the pure /proc parsers, the
// nvidia-smi arguments a fake must recognise, and the GPU query with its
// errors, which Collect swallows.
var (
	ParseMeminfo = parseMeminfo
	ParseLoadavg = parseLoadavg
	GPUQueryArgs = gpuQueryArgs
	ProbeGPUs    = probeGPUs
)
