// The msocket Android library: the Kotlin API (src/main/kotlin), the UniFFI bindings
// generated from the Rust library, and libmsocket_ffi.so for each ABI, published as one
// AAR so an app adds a single dependency. README.md ("Building", "Packaging",
// "Publishing") says what it needs and how to release it; versions are in
// gradle/libs.versions.toml.
//
// The generated bindings and .so files are registered through AGP's variant API, so every
// task that reads a variant's sources (compilation, lint, the sources and javadoc jars)
// depends on the task that makes them.

import javax.inject.Inject
import org.gradle.process.ExecOperations

buildscript {
    repositories { mavenCentral() }
    // Built-in Kotlin uses the Kotlin Gradle plugin on this classpath: raised from AGP's own
    // (2.2.10) to the Kotlin the host tests compile the same sources with.
    dependencies { classpath(libs.kotlin.gradle.plugin) }
}

plugins {
    alias(libs.plugins.android.library)
    `maven-publish`
    signing
}

group = "dev.msocket"
version = "0.1.0"

/** The ABIs built and shipped: the four JNA's AAR has libjnidispatch.so for. */
val androidAbis = listOf("armeabi-v7a", "arm64-v8a", "x86", "x86_64")
val projectUrl = "https://github.com/msocket/msocket"

android {
    namespace = "dev.msocket"
    compileSdk = libs.versions.android.compile.sdk.get().toInt()
    ndkVersion = libs.versions.android.ndk.get()

    defaultConfig {
        minSdk = libs.versions.android.min.sdk.get().toInt()
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += androidAbis }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    publishing {
        singleVariant("release") {
            withSourcesJar()
            withJavadocJar()
        }
    }
}

kotlin {
    jvmToolchain(libs.versions.jvm.toolchain.get().toInt())
}

dependencies {
    // UniFFI's Kotlin bindings call the library through JNA; its AAR carries libjnidispatch.so.
    api("net.java.dev.jna:jna:${libs.versions.jna.get()}@aar")
    // The API returns SharedFlow/Flow and has suspend functions: apps compile against it.
    api(libs.kotlinx.coroutines.android)
}

/**
 * libmsocket_ffi.so for every ABI (release profile) with cargo-ndk, laid out as
 * `<abi>/libmsocket_ffi.so` in [outputDir].
 */
abstract class CargoNdkBuild @Inject constructor(private val exec: ExecOperations) : DefaultTask() {
    @get:Input abstract val abis: ListProperty<String>

    /** The Android API level the library is linked for (minSdk). */
    @get:Input abstract val apiLevel: Property<Int>

    /**
     * The NDK AGP resolved for `ndkVersion`. cargo-ndk would otherwise take the newest NDK
     * installed, whatever the build asks for.
     */
    @get:Input abstract val ndkPath: Property<String>

    /** The Cargo workspace root. */
    @get:Internal abstract val workspace: DirectoryProperty

    @get:InputFiles
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val rustSources: ConfigurableFileCollection

    @get:OutputDirectory abstract val outputDir: DirectoryProperty

    @TaskAction
    fun build() {
        val out = outputDir.get().asFile
        out.deleteRecursively()
        out.mkdirs()
        exec.exec {
            workingDir = workspace.get().asFile
            environment("ANDROID_NDK_HOME", ndkPath.get())
            commandLine(
                listOf("cargo", "ndk", "--platform", apiLevel.get().toString()) +
                    abis.get().flatMap { listOf("-t", it) } +
                    listOf("-o", out.path, "build", "--release", "--locked", "-p", "msocket-ffi", "--lib"),
            )
        }
    }
}

/** The Kotlin bindings, generated from a built library (UniFFI library mode). */
abstract class GenerateUniffiBindings @Inject constructor(private val exec: ExecOperations) : DefaultTask() {
    /** Any ABI's build: the interface metadata is the same in each. */
    @get:InputFile
    @get:PathSensitive(PathSensitivity.NONE)
    abstract val library: RegularFileProperty

    /** The Cargo workspace root. */
    @get:Internal abstract val workspace: DirectoryProperty

    /** The generator's sources and lock file: its UniFFI version decides the output. */
    @get:InputFiles
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val generatorSources: ConfigurableFileCollection

    @get:OutputDirectory abstract val outputDir: DirectoryProperty

    @TaskAction
    fun generate() {
        val out = outputDir.get().asFile
        out.deleteRecursively()
        out.mkdirs()
        exec.exec {
            workingDir = workspace.get().asFile
            commandLine(
                "cargo", "run", "--locked", "-p", "msocket-ffi-bindgen", "--bin", "uniffi-bindgen", "--",
                "generate", "--no-format", "--library", library.get().asFile.path,
                "--language", "kotlin", "--out-dir", out.path,
            )
        }
    }
}

val workspaceDir: Directory = layout.projectDirectory.dir("..")

androidComponents {
    onVariants { variant ->
        val suffix = variant.name.replaceFirstChar(Char::uppercaseChar)
        val cargoNdk = tasks.register<CargoNdkBuild>("cargoNdk$suffix") {
            abis.set(androidAbis)
            apiLevel.set(libs.versions.android.min.sdk.get().toInt())
            ndkPath.set(sdkComponents.ndkDirectory.map { it.asFile.absolutePath })
            workspace.set(workspaceDir)
            rustSources.from(workspaceDir.files("Cargo.toml", "Cargo.lock", "core", "ffi", "udl"))
        }
        val bindings = tasks.register<GenerateUniffiBindings>("generateUniffiBindings$suffix") {
            library.set(cargoNdk.flatMap { it.outputDir.file("arm64-v8a/libmsocket_ffi.so") })
            workspace.set(workspaceDir)
            generatorSources.from(workspaceDir.files("Cargo.lock", "ffi/bindgen"))
        }
        variant.sources.jniLibs?.addGeneratedSourceDirectory(cargoNdk, CargoNdkBuild::outputDir)
        // Kotlin files: built-in Kotlin compiles the Java source directories as well.
        variant.sources.java?.addGeneratedSourceDirectory(bindings, GenerateUniffiBindings::outputDir)
    }
}

publishing {
    publications {
        register<MavenPublication>("release") {
            groupId = "dev.msocket"
            artifactId = "msocket-android"
            version = project.version.toString()
            afterEvaluate { from(components["release"]) }
            pom {
                name = "msocket for Android"
                description = "One encrypted byte stream to a named peer that survives network moves: " +
                    "the Kotlin API and the native library for arm64-v8a, armeabi-v7a, x86 and x86_64."
                url = projectUrl
                licenses {
                    license {
                        name = "MIT"
                        url = "https://opensource.org/license/mit"
                    }
                    license {
                        name = "Apache-2.0"
                        url = "https://www.apache.org/licenses/LICENSE-2.0.txt"
                    }
                }
                developers {
                    developer {
                        id = "msocket"
                        name = "The msocket developers"
                        url = projectUrl
                    }
                }
                scm {
                    url = projectUrl
                    connection = "scm:git:$projectUrl.git"
                    developerConnection = "scm:git:ssh://git@github.com/msocket/msocket.git"
                }
            }
        }
    }
    repositories {
        // Maven Central through the Sonatype Central Portal's OSSRH staging API (snapshots
        // to the Portal's snapshot repository). The user token comes from the Gradle
        // properties sonatypeUsername and sonatypePassword (or ORG_GRADLE_PROJECT_… in the
        // environment); README.md, "Publishing", has the step that releases the upload.
        maven {
            name = "sonatype"
            url = uri(
                if (version.toString().endsWith("-SNAPSHOT")) {
                    "https://central.sonatype.com/repository/maven-snapshots/"
                } else {
                    "https://ossrh-staging-api.central.sonatype.com/service/local/staging/deploy/maven2/"
                },
            )
            credentials(PasswordCredentials::class)
        }
    }
}

// Signed when a key is given (an ASCII-armoured secret key in the Gradle property
// signingKey, its passphrase in signingPassword); Maven Central refuses unsigned uploads.
val signingKey = providers.gradleProperty("signingKey")
signing {
    if (signingKey.isPresent) {
        useInMemoryPgpKeys(signingKey.get(), providers.gradleProperty("signingPassword").getOrElse(""))
        sign(publishing.publications["release"])
    }
}
tasks.withType<PublishToMavenRepository>().configureEach {
    val signed = signingKey.isPresent
    doFirst {
        check(signed) { "Maven Central takes signed artifacts only: set the Gradle properties signingKey and signingPassword" }
    }
}
