using Kmem.Cli;

namespace Kmem.Cli.Tests;

/// <summary>A synthetic demo run: records shaped like a real one's (figures of docs/benchmarks.md, section 4) and a fixed environment.</summary>
internal static class DemoSamples
{
    public static readonly string[] Modes = ["baseline", "ctor-dtor", "no-percpu", "percpu-cache"];
    public static readonly int[] Threads = [1, 2, 4, 8];

    public static DemoEnvironment Environment(int cores) => new(
        new DemoEnvironment.MachineInfo(cores, cores, "Test CPU 9000 @ 1.00GHz", "TestOS 1 (synthetic)", "TestOS kernel 1.0", "x64", 8L << 30),
        new DemoEnvironment.RuntimeInfo("10.0.0", ".NET 10.0.0", "linux-x64", "workstation", true, "Interactive", "Release",
            "1.0.0+0123456789abcdef0123456789abcdef01234567"),
        "0123456789abcdef0123456789abcdef01234567",
        new DateTime(2026, 12, 4, 5, 6, 7, 890, DateTimeKind.Utc));

    public static List<DemoOutput.RunRecord> Records()
    {
        // Lifetimes per second by workload and mode at 1, 2, 4 and 8 threads.
        var rates = new Dictionary<(string, string), double[]>
        {
            [("mm", "baseline")] = [2.41e6, 1.01e6, 1.32e6, 1.69e6],
            [("mm", "ctor-dtor")] = [4.37e6, 8.93e6, 9.28e6, 10.13e6],
            [("mm", "no-percpu")] = [10.36e6, 21.86e6, 23.36e6, 22.30e6],
            [("mm", "percpu-cache")] = [3.53e6, 6.62e6, 6.59e6, 3.09e6],
            [("tc", "baseline")] = [2.47e6, 0.99e6, 1.38e6, 1.18e6],
            [("tc", "ctor-dtor")] = [12.32e6, 24.76e6, 26.03e6, 26.86e6],
            [("tc", "no-percpu")] = [20.21e6, 44.31e6, 42.36e6, 47.22e6],
            [("tc", "percpu-cache")] = [5.74e6, 7.43e6, 10.18e6, 10.91e6],
        };
        var records = new List<DemoOutput.RunRecord>();
        foreach (string w in new[] { "mm", "tc" })
        {
            for (int i = 0; i < Threads.Length; i++)
            {
                foreach (string mode in Modes)
                {
                    double ops = rates[(w, mode)][i];
                    long lifetimes = (long)(ops * 0.75);
                    // pcpu_alloc_mutex per lifetime: 2 (mm) or 3 (tc) in the baseline, a few per
                    // slab in ctor-dtor (none at 1 thread: a floor point), none in no-percpu.
                    double perLifetime = mode switch
                    {
                        "baseline" => w == "mm" ? 2 : 3,
                        "ctor-dtor" => i == 0 ? 0 : 3.1e-5 * (i + 1),
                        "no-percpu" => 0,
                        _ => 1.2e-3,
                    };
                    long acquisitions = (long)Math.Round(perLifetime * lifetimes);
                    records.Add(new DemoOutput.RunRecord(w, mode, Threads[i], ops, lifetimes, acquisitions, perLifetime,
                        mode == "baseline" ? 100 * Threads[i] : 0,
                        mode == "baseline" ? null : ops / rates[(w, "baseline")][i] - 1,
                        mode == "no-percpu" ? null : rates[(w, "no-percpu")][i] / ops,
                        0, 0.6,
                        [new DemoOutput.LockRecord("pcpu_alloc_mutex", acquisitions, mode == "baseline" ? 100 * Threads[i] : 0, 120.5, 1e6, 9e4, 20)],
                        w == "mm" && mode == "baseline" ? 2 * lifetimes : 0, w == "mm" && mode == "baseline" ? 2 : 0));
                }
            }
        }
        return records;
    }
}
