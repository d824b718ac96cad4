using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/Kmem.Benchmarks -- --filter '*' [--job short]
BenchmarkSwitcher.FromAssembly(typeof(Kmem.Benchmarks.AllocFreeBenchmarks).Assembly).Run(args);
