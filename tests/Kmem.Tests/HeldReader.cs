namespace Kmem.Tests;

/// <summary>A thread inside a read-side section until <see cref="Leave"/>; <see cref="Left"/> is set just before it unlocks.</summary>
internal sealed class HeldReader : IDisposable
{
    private readonly ManualResetEventSlim _entered = new();
    private readonly ManualResetEventSlim _leave = new();
    private readonly Thread _thread;
    public volatile bool Left;

    public HeldReader()
    {
        _thread = new Thread(() =>
        {
            Rcu.ReadLock();
            _entered.Set();
            _leave.Wait();
            Left = true;
            Rcu.ReadUnlock();
        }) { IsBackground = true };
        _thread.Start();
        Assert.True(_entered.Wait(TimeSpan.FromSeconds(20)));
    }

    public void Leave()
    {
        _leave.Set();
        Assert.True(_thread.Join(TimeSpan.FromSeconds(20)));
    }

    public void Dispose()
    {
        _leave.Set();
        _thread.Join(TimeSpan.FromSeconds(20));
    }
}
