using System.Runtime.ExceptionServices;

namespace Kmem.Tests;

/// <summary>
/// An action on a thread of its own, for tests that must see a call still blocked (a
/// grace period) and then see it finish; an exception it threw is rethrown by <see cref="Join"/>.
/// </summary>
internal sealed class BackgroundCall
{
    private readonly Thread _thread;
    private Exception? _failure;

    private BackgroundCall(Action action)
    {
        _thread = new Thread(() =>
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                _failure = e;
            }
        }) { IsBackground = true };
        _thread.Start();
    }

    public static BackgroundCall Start(Action action) => new(action);

    /// <summary>True when the action has returned within <paramref name="timeout"/>; rethrows what it threw.</summary>
    public bool Join(TimeSpan timeout)
    {
        if (!_thread.Join(timeout))
            return false;
        if (_failure != null)
            ExceptionDispatchInfo.Throw(_failure);
        return true;
    }
}
