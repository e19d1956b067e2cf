package inventory

// Internals the external tests reach: the pure /proc parsers, and the
// nvidia-smi arguments a fake must recognise.
var (
	ParseMeminfo     = parseMeminfo
	ParseLoadavg     = parseLoadavg
	GPUQueryArgs     = gpuQueryArgs
	ProcessQueryArgs = processQueryArgs
)
