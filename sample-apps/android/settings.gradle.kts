// The Android sample apps as one Gradle build: `:chat` and `:stream` (Jetpack Compose),
// and `:shared`, the chat and streaming logic in ../shared that the console samples run
// too. The msocket library is built from source by the sibling build ../../android
// (dev.msocket:msocket-android is substituted by it); README.md says how to use the
// published artifact instead.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode = RepositoriesMode.FAIL_ON_PROJECT_REPOS
    repositories {
        google()
        mavenCentral()
    }
    versionCatalogs {
        // AGP, Kotlin, the SDK levels and coroutines: the library's own versions.
        create("libs") { from(files("../../android/gradle/libs.versions.toml")) }
        // Compose, Activity and Lifecycle (ci/sample-android reads the same file).
        create("samples") { from(files("gradle/samples.versions.toml")) }
    }
}

includeBuild("../../android") {
    dependencySubstitution {
        substitute(module("dev.msocket:msocket-android")).using(project(":"))
    }
}

rootProject.name = "msocket-samples"

include(":shared", ":chat", ":stream")
project(":shared").projectDir = file("../shared")
