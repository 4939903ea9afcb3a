"""The kernel backend: KernelNPLM (a Nystrom Gaussian-kernel model of f solved by nplm_kernel.solver),
its Nystrom geometry, and the kernel Taylor learner of shape nuisances."""
