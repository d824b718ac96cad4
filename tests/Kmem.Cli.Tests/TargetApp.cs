using System.Diagnostics;
using System.Globalization;

namespace Kmem.Cli.Tests;

/// <summary>
/// A child process running tests/Kmem.TargetApp (built beside the tests): one cache of a
/// given name with a given number of live objects, its Kmem meter published. Disposing it
/// closes its standard input, which ends it, and kills it if it has not ended a moment later.
/// </summary>
internal sealed class TargetApp : IDisposable
{
    private static readonly TimeSpan s_readyTimeout = TimeSpan.FromSeconds(15);

    private readonly Process _process;
    private bool _disposed;

    private TargetApp(Process process) => _process = process;

    /// <summary>The child's process id.</summary>
    public int Id => _process.Id;

    /// <summary>The id as a command-line argument.</summary>
    public string Pid => Id.ToString(CultureInfo.InvariantCulture);

    /// <summary>A cache name no other test or process uses.</summary>
    public static string UniqueCacheName() => $"kmem_cli_test_{Guid.NewGuid():N}"[..22];

    /// <summary>
    /// Starts the target and waits for its "ready". <paramref name="cacheName"/> "-": no
    /// cache, so no Kmem meter. <paramref name="exitAfter"/>: it ends by itself after that
    /// many seconds of being ready.
    /// </summary>
    public static TargetApp Start(string cacheName, int objects, double? exitAfter = null, bool diagnostics = true)
    {
        // Under `dotnet test` the host that runs the tests is named here; elsewhere, PATH's.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Kmem.TargetApp.dll"));
        start.ArgumentList.Add(cacheName);
        start.ArgumentList.Add(objects.ToString(CultureInfo.InvariantCulture));
        if (exitAfter is double seconds)
        {
            start.ArgumentList.Add("--exit-after");
            start.ArgumentList.Add(seconds.ToString(CultureInfo.InvariantCulture));
        }
        // The test host's own settings must not reach the child: it is attached to.
        start.Environment.Remove("DOTNET_EnableDiagnostics");
        start.Environment.Remove("DOTNET_EnableDiagnostics_IPC");
        if (!diagnostics)
            start.Environment["DOTNET_EnableDiagnostics"] = "0";

        var target = new TargetApp(Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start"));
        try
        {
            Task<string?> line = target._process.StandardOutput.ReadLineAsync();
            if (!line.Wait(s_readyTimeout) || line.Result != "ready")
            {
                target.Kill();
                throw new InvalidOperationException(
                    $"Kmem.TargetApp did not say ready within {s_readyTimeout.TotalSeconds} s: {target._process.StandardError.ReadToEnd()}");
            }
            return target;
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    /// <summary>Waits for the child to end by itself; true if it did within <paramref name="timeout"/>.</summary>
    public bool WaitForExit(TimeSpan timeout) => _process.WaitForExit(timeout);

    private void Kill()
    {
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        try
        {
            // The polite end first: the target frees its objects and returns.
            if (!_process.HasExited)
            {
                _process.StandardInput.Close();
                _process.WaitForExit(2000);
            }
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
            // Its stdin is gone with it.
        }
        finally
        {
            Kill();
            _process.Dispose();
        }
    }
}
