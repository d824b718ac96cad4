using System.Diagnostics;

namespace Kmem.Cli;

/// <summary>
/// A process `kmem top` or `kmem slabinfo -p` cannot read: none with that id, not a .NET
/// process, its diagnostics channel closed, another metrics session in the way. Exit code
/// 2 (<see cref="KmemApp"/>), with the message, which says which of these it is.
/// </summary>
public sealed class TargetProcessException : Exception
{
    /// <summary>A refusal described by <paramref name="message"/>.</summary>
    public TargetProcessException(string message) : base(message) { }

    /// <summary>A refusal described by <paramref name="message"/>, caused by <paramref name="inner"/>.</summary>
    public TargetProcessException(string message, Exception inner) : base(message, inner) { }

    /// <summary>For serializers and analyzers; kmem always says why.</summary>
    public TargetProcessException() : base("the process cannot be read") { }
}

/// <summary>The process attached to: its id, and a name to show.</summary>
internal sealed class TargetProcess : IDisposable
{
    private readonly Process _process;

    private TargetProcess(Process process, string name)
    {
        _process = process;
        Name = name;
    }

    /// <summary>The process id.</summary>
    public int Id => _process.Id;

    /// <summary>Its name; for `dotnet app.dll`, "dotnet app.dll" (Linux), the name alone being "dotnet".</summary>
    public string Name { get; }

    /// <summary>"1234 (name)".</summary>
    public override string ToString() => $"{Id} ({Name})";

    /// <summary>The process with id <paramref name="pid"/>; <see cref="TargetProcessException"/> if there is none.</summary>
    public static TargetProcess Find(int pid)
    {
        Process process;
        try
        {
            process = Process.GetProcessById(pid);
        }
        catch (ArgumentException)
        {
            throw new TargetProcessException($"no process with id {pid} is running");
        }
        string name;
        try
        {
            name = process.ProcessName;
        }
        catch (InvalidOperationException)
        {
            throw new TargetProcessException($"no process with id {pid} is running (it has just exited)");
        }
        return new TargetProcess(process, DotnetEntryAssembly(pid) is { } dll ? $"{name} {dll}" : name);
    }

    /// <summary>
    /// True once the process has exited. On Linux a process that has exited but whose parent
    /// has not reaped it yet (a zombie) still answers <see cref="Process.HasExited"/> with
    /// false for anyone but its parent, and its parent may take its time (or, under a loaded
    /// test host, seconds): its /proc state says Z, which is what counts here.
    /// </summary>
    public bool HasExited
    {
        get
        {
            if (OperatingSystem.IsLinux())
            {
                try
                {
                    // "pid (comm) S ...": the state follows the last ')', as comm may hold one.
                    string stat = File.ReadAllText($"/proc/{Id}/stat");
                    int close = stat.LastIndexOf(')');
                    if (close > 0 && close + 2 < stat.Length && stat[close + 2] is 'Z' or 'X')
                        return true;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    return true;   // no /proc entry: gone (and reaped)
                }
            }
            try
            {
                _process.Refresh();
                return _process.HasExited;
            }
            catch (InvalidOperationException)
            {
                return true;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                return false;   // not ours to wait for, and still there as far as we can tell
            }
        }
    }

    /// <summary>
    /// Why the diagnostics channel could not be opened, in words: the client library says
    /// only that it found no socket. On Linux the process's mappings tell a process with no
    /// .NET runtime from one whose channel is closed.
    /// </summary>
    public string DescribeAttachFailure(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (HasExited)
            return $"process {this} exited before kmem could attach";
        bool? runtime = LoadsCoreClr(Id);
        if (runtime == false)
            return $"process {this} is not a .NET process: no .NET runtime (libcoreclr) is loaded in it";
        if (runtime == true)
            return $"process {this} runs .NET, but its diagnostics channel is closed: it was started with DOTNET_EnableDiagnostics=0 "
                + "(or DOTNET_EnableDiagnostics_IPC=0), or its socket is where kmem cannot see it (another container)";
        return $"cannot attach to process {this}: not a .NET process, or its diagnostics are disabled (DOTNET_EnableDiagnostics=0): {e.Message}";
    }

    /// <summary>Whether the process has CoreCLR mapped (Linux: /proc/PID/maps); null where that cannot be read.</summary>
    private static bool? LoadsCoreClr(int pid)
    {
        if (!OperatingSystem.IsLinux())
            return null;
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/maps"))
            {
                if (line.EndsWith("/libcoreclr.so", StringComparison.Ordinal))
                    return true;
            }
            return false;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The app.dll of `dotnet [exec ...] app.dll` (Linux: /proc/PID/cmdline), or null.</summary>
    private static string? DotnetEntryAssembly(int pid)
    {
        if (!OperatingSystem.IsLinux())
            return null;
        try
        {
            string[] argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
            if (argv.Length < 2 || Path.GetFileNameWithoutExtension(argv[0]) != "dotnet")
                return null;
            string? dll = argv.Skip(1).FirstOrDefault(a => a.EndsWith(".dll", StringComparison.OrdinalIgnoreCase));
            return dll is null ? null : Path.GetFileName(dll);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _process.Dispose();
}
