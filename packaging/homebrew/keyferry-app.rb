# Homebrew cask for Keyferry.app (the menu-bar app with the agent inside), from the release's
# universal .dmg (scripts/package.sh). Per release: bump `version` and `sha256` from the
# release's SHA256SUMS. For a tap: copy to Casks/keyferry-app.rb.
cask "keyferry-app" do
  version "0.1.0"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"

  url "https://github.com/keyferry/keyferry/releases/download/v#{version}/Keyferry_#{version}_universal.dmg"
  name "Keyferry"
  desc "Menu-bar app that keeps AI CLI tokens in the Keychain and ferries them into sandboxes"
  homepage "https://github.com/keyferry/keyferry"

  depends_on macos: ">= :big_sur"

  app "Keyferry.app"

  uninstall quit:       "dev.keyferry.tray",
            launchctl: "Keyferry"

  zap trash: [
    "~/Library/Application Support/keyferry",
    "~/Library/LaunchAgents/Keyferry.plist",
  ]
end
