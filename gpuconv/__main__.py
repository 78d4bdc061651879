from gpuconv.cli import console_main

console_main()
