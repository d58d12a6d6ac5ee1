# Homebrew formula for the `keyferry` CLI and headless agent, from the release's universal
# macOS tarball (scripts/package.sh) or the Linux one. Per release: bump `version` and the
# sha256 values from the release's SHA256SUMS. For a tap: copy to Formula/keyferry.rb.
class Keyferry < Formula
  desc "Keeps AI CLI tokens in the OS keychain and ferries them into sandboxes"
  homepage "https://github.com/keyferry/keyferry"
  version "0.1.0"
  license any_of: ["MIT", "Apache-2.0"]

  on_macos do
    url "https://github.com/keyferry/keyferry/releases/download/v#{version}/keyferry-#{version}-macos-universal.tar.gz"
    sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  end
  on_linux do
    on_intel do
      url "https://github.com/keyferry/keyferry/releases/download/v#{version}/keyferry-#{version}-linux-x86_64.tar.gz"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
  end

  def install
    bin.install "keyferry"
    bash_completion.install "completions/keyferry.bash" => "keyferry"
    zsh_completion.install "completions/_keyferry"
    fish_completion.install "completions/keyferry.fish"
    man1.install Dir["man1/*.1.gz"]
  end

  service do
    run [opt_bin/"keyferry", "agent"]
    keep_alive true
    log_path var/"log/keyferry-agent.log"
    error_log_path var/"log/keyferry-agent.log"
  end

  test do
    assert_match "keyferry #{version}", shell_output("#{bin}/keyferry --version")
    assert_match "complete -F _keyferry", shell_output("#{bin}/keyferry completions bash")
  end
end
