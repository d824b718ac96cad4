using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using System.Runtime.InteropServices;

namespace Kmem.Cli;

/// <summary>
/// Where and when `kmem demo` ran: the machine, the runtime, the commit and the start time.
/// results.json carries it, and every chart's subtitle says it, so that a chart or a file
/// found later still tells which machine and build its numbers are from.
/// </summary>
/// <param name="Machine">The machine.</param>
/// <param name="Runtime">The .NET runtime and how it was configured.</param>
/// <param name="Commit">The git commit kmem was built from, or "unknown".</param>
/// <param name="StartedAt">When the runs started, UTC.</param>
internal sealed record DemoEnvironment(DemoEnvironment.MachineInfo Machine, DemoEnvironment.RuntimeInfo Runtime, string Commit, DateTime StartedAt)
{
    /// <param name="Cores">Logical cores the process may run on (<see cref="Environment.ProcessorCount"/>): the count that thread counts above it oversubscribe.</param>
    /// <param name="PossibleCpus">CPUs the kernel could bring online (the per-CPU areas' size).</param>
    /// <param name="Cpu">The CPU model from /proc/cpuinfo, or the architecture where there is none.</param>
    /// <param name="Os">The distribution's name (/etc/os-release) or the runtime's description of the OS.</param>
    /// <param name="Kernel">The kernel release (/proc/sys/kernel/osrelease), or the OS version where there is none.</param>
    /// <param name="Architecture">The process architecture, as .NET names it.</param>
    /// <param name="MemoryBytes">Physical memory (/proc/meminfo MemTotal), or what the GC may use where that is missing.</param>
    public sealed record MachineInfo(int Cores, int PossibleCpus, string Cpu, string Os, string Kernel, string Architecture, long MemoryBytes);

    /// <param name="Version">The runtime's version.</param>
    /// <param name="Framework">The framework's description, e.g. ".NET 10.0.0".</param>
    /// <param name="RuntimeIdentifier">The runtime identifier, e.g. linux-x64.</param>
    /// <param name="GcMode">"workstation" or "server".</param>
    /// <param name="GcConcurrent">Whether background GC is on.</param>
    /// <param name="GcLatencyMode">The GC latency mode.</param>
    /// <param name="Configuration">The build configuration of kmem (Debug figures are not comparable).</param>
    /// <param name="KmemVersion">kmem's informational version.</param>
    public sealed record RuntimeInfo(string Version, string Framework, string RuntimeIdentifier, string GcMode, bool GcConcurrent,
        string GcLatencyMode, string Configuration, string KmemVersion);

    /// <summary>The environment of this process, started now.</summary>
    public static DemoEnvironment Current() => new(CurrentMachine(), CurrentRuntime(), CurrentCommit(), TruncateToMilliseconds(DateTime.UtcNow));

    /// <summary>The commit, short enough for a chart.</summary>
    public string ShortCommit => Commit.Length > 12 && Commit.All(char.IsAsciiHexDigit) ? Commit[..12] : Commit;

    /// <summary>
    /// One line for a chart's subtitle: cores, CPU, OS, runtime, date and commit. One line,
    /// because the SVG writer puts each line in a text element of its own.
    /// </summary>
    public string Subtitle => string.Create(CultureInfo.InvariantCulture,
        $"{Machine.Cores} logical cores, {Machine.Cpu}, {Machine.Os}, {Runtime.Framework} | {StartedAt:yyyy-MM-dd HH:mm} UTC | commit {ShortCommit}");

    private static DateTime TruncateToMilliseconds(DateTime t) => new(t.Ticks - t.Ticks % TimeSpan.TicksPerMillisecond, t.Kind);

    private static MachineInfo CurrentMachine() => new(
        Environment.ProcessorCount,
        CpuTopology.PossibleCpus,
        CpuModel() ?? RuntimeInformation.ProcessArchitecture.ToString(),
        OsName() ?? RuntimeInformation.OSDescription,
        KernelRelease() ?? Environment.OSVersion.VersionString,
        RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant(),
        MemTotal() ?? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);

    private static RuntimeInfo CurrentRuntime() => new(
        Environment.Version.ToString(),
        RuntimeInformation.FrameworkDescription,
        RuntimeInformation.RuntimeIdentifier,
        GCSettings.IsServerGC ? "server" : "workstation",
        // The runtime's default is on; runtimeconfig.json says otherwise only when set.
        AppContext.GetData("System.GC.Concurrent") is not bool concurrent || concurrent,
        GCSettings.LatencyMode.ToString(),
#if DEBUG
        "Debug",
#else
        "Release",
#endif
        KmemApp.Version);

    /// <summary>
    /// The commit: the SDK writes it into the informational version as "+sha" when it builds
    /// from a clone, which names the build that ran even if the clone moved on since. A build
    /// without it (from a source archive) asks git, in case it runs inside a clone after all.
    /// </summary>
    internal static string CurrentCommit()
    {
        int plus = KmemApp.Version.IndexOf('+', StringComparison.Ordinal);
        if (plus >= 0 && plus + 1 < KmemApp.Version.Length)
            return KmemApp.Version[(plus + 1)..];
        return GitHead() ?? "unknown";
    }

    private static string? GitHead()
    {
        try
        {
            using var git = Process.Start(new ProcessStartInfo("git", "rev-parse HEAD")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            if (git == null)
                return null;
            string head = git.StandardOutput.ReadToEnd().Trim();
            if (!git.WaitForExit(5000))
                return null;
            return git.ExitCode == 0 && head.Length > 0 ? head : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;   // no git on the PATH
        }
    }

    private static string? CpuModel()
    {
        // x86 says "model name"; arm64 kernels have no model line, some name the hardware.
        foreach (string line in ReadLines("/proc/cpuinfo"))
        {
            if (line.StartsWith("model name", StringComparison.Ordinal) || line.StartsWith("Hardware", StringComparison.Ordinal))
            {
                string value = line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
                if (value.Length > 0)
                    return value;
            }
        }
        return null;
    }

    private static string? OsName()
    {
        foreach (string line in ReadLines("/etc/os-release"))
        {
            if (line.StartsWith("PRETTY_NAME=", StringComparison.Ordinal))
                return line["PRETTY_NAME=".Length..].Trim('"');
        }
        return null;
    }

    private static string? KernelRelease() => ReadLines("/proc/sys/kernel/osrelease").FirstOrDefault(l => l.Length > 0)?.Trim();

    private static long? MemTotal()
    {
        foreach (string line in ReadLines("/proc/meminfo"))
        {
            // "MemTotal:       24683792 kB"
            if (line.StartsWith("MemTotal:", StringComparison.Ordinal)
                && long.TryParse(line["MemTotal:".Length..].Replace("kB", "", StringComparison.Ordinal).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                return kb * 1024;
        }
        return null;
    }

    private static string[] ReadLines(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllLines(path) : [];
        }
        catch (IOException)
        {
            return [];
        }
        catch (UnauthorizedAccessException)
        {
            return [];
        }
    }
}
