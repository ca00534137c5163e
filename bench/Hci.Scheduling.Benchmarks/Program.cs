using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/Hci.Scheduling.Benchmarks -- --filter '*' [--job short]
BenchmarkSwitcher.FromAssembly(typeof(Hci.Scheduling.Benchmarks.SchedulerBenchmarks).Assembly).Run(args);
