// CA2000: TestConsole's fluent setters (Width, Interactive) return the console they were called on, which the using disposes; the analyzer cannot see that.
#pragma warning disable CA2000
using System.Diagnostics;
using System.Text.RegularExpressions;
using Kmem.Cli;
using Spectre.Console.Cli.Testing;
using Spectre.Console.Testing;

namespace Kmem.Cli.Tests;

/// <summary>
/// `kmem top -p` and `kmem slabinfo -p` against a real process: a child running
/// Kmem.TargetApp with a cache of a name no one else uses and a known number of live
/// objects, attached to through its diagnostics channel as a user would. Each test starts
/// its own child (a third of a second) and ends it in a finally (<see cref="TargetApp.Dispose"/>).
/// </summary>
public class AttachTests
{
    private const int Objects = 1234;

    /// <summary>
    /// Runs kmem on a console wide enough for the tables (a TestConsole is 80 columns, and a
    /// squeezed table wraps a long cache name over two lines).
    /// </summary>
    private static CommandAppResult Run(TestConsole? console, params string[] args)
    {
        using var own = console == null ? new TestConsole().Width(200) : null;
        var app = new CommandAppTester(null, new CommandAppTesterSettings(), console ?? own!);
        app.Configure(KmemApp.Configure);
        return app.Run(args);
    }

    private static CommandAppResult Run(params string[] args) => Run(null, args);

    /// <summary>Top's row of <paramref name="cache"/>: its name, then its active objects as top prints them.</summary>
    private static Regex TopRow(string cache, int active) =>
        new($@"│ {Regex.Escape(cache)}\s+│\s+{active:N0} │\s+[\d,]+ │\s+\d+% │\s+[\d,]+ │\s+[\d.]+ [KMG]?i?B │", RegexOptions.Multiline);

    [Fact]
    public void Slabinfo_p_prints_the_targets_cache_with_its_active_objects()
    {
        string cache = TargetApp.UniqueCacheName();
        using var target = TargetApp.Start(cache, Objects);

        CommandAppResult r = Run("slabinfo", "-p", target.Pid);

        Assert.Equal(0, r.ExitCode);
        Assert.StartsWith($"# kmem slabinfo: process {target.Id} (", r.Output);
        Assert.Matches(@"(?m)^# name\s+<active_objs> <num_objs> <num_slabs>\s+<bytes> <cached>\s+<ctor>\s+<dtor>$", r.Output);
        // name, active, total (at least the active), slabs, bytes (a slab at least), cached, ctor, dtor: as SlabInfo.Format lays them out.
        Match row = Regex.Match(r.Output, $@"(?m)^{cache}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+0\s+0$");
        Assert.True(row.Success, r.Output);
        Assert.Equal(Objects, int.Parse(row.Groups[1].Value));
        Assert.True(int.Parse(row.Groups[2].Value) >= Objects);
        Assert.True(int.Parse(row.Groups[3].Value) >= 1);
        Assert.True(long.Parse(row.Groups[4].Value) >= 4096);
        Assert.Matches(@"(?m)^# pages held from the OS: [1-9]\d* bytes \(large kmalloc: 0\)$", r.Output);
    }

    [Fact]
    public void Top_p_count_2_prints_two_refreshes_with_the_targets_cache_and_stops()
    {
        string cache = TargetApp.UniqueCacheName();
        using var target = TargetApp.Start(cache, Objects);

        var clock = Stopwatch.StartNew();
        CommandAppResult r = Run("top", "-p", target.Pid, "--count", "2", "--interval", "0.5", "--sort", "name");

        Assert.Equal(0, r.ExitCode);
        // Not on a terminal: one plain table per refresh, and nothing of a live display.
        Assert.Equal(2, Regex.Count(r.Output, $@"(?m)^kmem top: process {target.Id} \(.*\) at \d\d:\d\d:\d\d, 1 cache$"));
        Assert.Equal(2, Regex.Count(r.Output, @"(?m)^pages held [\d.]+ [KMG]?i?B, cached [\d.]+ [KMG]?i?B, in use [\d.]+ [KMG]?i?B$"));
        Assert.Equal(2, TopRow(cache, Objects).Count(r.Output));
        Assert.DoesNotContain("Ctrl+C", r.Output);
        Assert.DoesNotContain("exited", r.Output);
        // Two refreshes half a second apart, not the default second.
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.9, 12);
    }

    [Fact]
    public void Top_on_a_terminal_draws_the_table_live()
    {
        string cache = TargetApp.UniqueCacheName();
        using var target = TargetApp.Start(cache, Objects);
        using var console = new TestConsole().Width(200).Interactive().SupportsAnsi(true);

        CommandAppResult r = Run(console, "top", "-p", target.Pid, "--count", "2", "--interval", "0.5");

        Assert.Equal(0, r.ExitCode);
        Assert.Contains("every 0.5 s, by memory; Ctrl+C to stop", console.Output);
        Assert.Matches(TopRow(cache, Objects), console.Output);
    }

    [Fact]
    public void Top_ends_with_exit_0_when_the_target_exits()
    {
        // The target ends by itself: no --count, no Ctrl+C; top must notice.
        using var target = TargetApp.Start(TargetApp.UniqueCacheName(), Objects, exitAfter: 1);

        CommandAppResult r = Run("top", "-p", target.Pid, "--interval", "0.5");

        Assert.True(r.ExitCode == 0, r.Output);
        Assert.EndsWith($"kmem top: process {target.Id} (dotnet Kmem.TargetApp.dll) exited", r.Output.TrimEnd());
        Assert.True(target.WaitForExit(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public void The_session_reads_the_cache_until_the_target_exits()
    {
        // Top_ends_with_exit_0_when_the_target_exits step by step, with the exit in the
        // test's hands: a collection with the cache first, then the end of the session.
        string cache = TargetApp.UniqueCacheName();
        using var target = TargetApp.Start(cache, Objects);
        using var session = KmemMetricsSession.Start(target.Id, TimeSpan.FromSeconds(0.2));

        SessionRead first = session.Read(TimeSpan.FromSeconds(10), CancellationToken.None);
        Assert.Equal(SessionReadKind.Snapshot, first.Kind);
        Assert.True(first.Snapshot!.HasKmemMeter);
        Assert.Equal(Objects, Assert.Single(first.Snapshot.Caches, c => c.Name == cache).ActiveObjects);

        target.Dispose();   // closes its stdin: it frees its objects, disposes the cache and returns
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        SessionRead read;
        do
            read = session.Read(deadline - DateTime.UtcNow, CancellationToken.None);
        while (read.Kind == SessionReadKind.Snapshot);
        Assert.Equal(SessionReadKind.TargetExited, read.Kind);
        // And it stays over.
        Assert.Equal(SessionReadKind.TargetExited, session.Read(TimeSpan.Zero, CancellationToken.None).Kind);
    }

    [Fact]
    public void Slabinfo_p_of_a_dotnet_process_without_Kmem_says_so_and_exits_1()
    {
        using var target = TargetApp.Start("-", 0);

        CommandAppResult r = Run("slabinfo", "-p", target.Pid, "--timeout", "5");

        Assert.Equal(SlabInfoCommand.NoKmemMeter, r.ExitCode);
        Assert.Contains($"# {TopView.NoMeter}", r.Output);
        Assert.DoesNotContain("<active_objs>", r.Output);
    }

    [Fact]
    public void A_second_metrics_session_is_refused_with_exit_2_and_the_first_goes_on()
    {
        string cache = TargetApp.UniqueCacheName();
        using var target = TargetApp.Start(cache, Objects);
        using var first = KmemMetricsSession.Start(target.Id, TimeSpan.FromSeconds(0.3));
        Assert.Equal(SessionReadKind.Snapshot, first.Read(TimeSpan.FromSeconds(10), CancellationToken.None).Kind);

        var clock = Stopwatch.StartNew();
        CommandAppResult r = Run("slabinfo", "-p", target.Pid);

        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains("another tool is reading the process's metrics", r.Output);
        // Said at once, not after the wait for values.
        Assert.True(clock.Elapsed < TopCommand.FirstValuesGrace, $"{clock.Elapsed}");
        SessionRead later = first.Read(TimeSpan.FromSeconds(10), CancellationToken.None);
        Assert.Equal(SessionReadKind.Snapshot, later.Kind);
        Assert.Equal(Objects, Assert.Single(later.Snapshot!.Caches, c => c.Name == cache).ActiveObjects);
    }

    [Theory]
    [InlineData("top")]
    [InlineData("slabinfo")]
    public void No_such_process_exits_2(string command)
    {
        int pid = UnusedPid();
        CommandAppResult r = Run(command, "-p", pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Equal($"kmem: no process with id {pid} is running", r.Output.Trim());
    }

    [Fact]
    public void A_process_that_is_not_dotnet_exits_2()
    {
        if (!OperatingSystem.IsLinux())
            return;   // it tells a native process by its mappings, and `sleep` is a Unix program
        using var sleep = Process.Start("sleep", "30");
        try
        {
            CommandAppResult r = Run("top", "-p", sleep.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(KmemApp.UsageError, r.ExitCode);
            Assert.Contains($"kmem: process {sleep.Id} (sleep) is not a .NET process", r.Output);
        }
        finally
        {
            sleep.Kill();
            sleep.WaitForExit();
        }
    }

    [Fact]
    public void A_dotnet_process_with_diagnostics_disabled_exits_2()
    {
        using var target = TargetApp.Start(TargetApp.UniqueCacheName(), 1, diagnostics: false);
        CommandAppResult r = Run("slabinfo", "-p", target.Pid);
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains(OperatingSystem.IsLinux() ? "runs .NET, but its diagnostics channel is closed" : "DOTNET_EnableDiagnostics=0", r.Output);
    }

    /// <summary>999999, or the first id below it no process has (pids wrap, rarely that high).</summary>
    private static int UnusedPid()
    {
        for (int pid = 999_999; ; pid--)
        {
            try
            {
                using var p = Process.GetProcessById(pid);
            }
            catch (ArgumentException)
            {
                return pid;
            }
        }
    }
}
